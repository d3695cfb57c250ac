"""Shared pytest fixtures and hooks for the m3d_tf suite; each owner keeps to its own section."""

import pytest


# === Environment (scripts/m3d-env): TFX tests run, or fail ===
# The whole suite runs inside the project environment, which has TFX. A tfx-marked test that
# skips (for example through pytest.importorskip("tfx")) hides a broken stack, so it fails.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    expected_failure = hasattr(report, "wasxfail")
    if report.skipped and not expected_failure and item.get_closest_marker("tfx") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is marked tfx and was skipped ({reason}); TFX tests must run: "
                           "use the project environment (make test, or scripts/m3d-env run ...)")
    return report

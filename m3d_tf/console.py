"""The `m3d` command's console: our own lines only, set up before TensorFlow loads.

TensorFlow reads its log level once, when it loads, and its libraries log while they load; so
the quiet has to come first. m3d_tf/__init__.py imports TensorFlow, and both ways into the
command (the `m3d` console script and `python -m m3d_tf`) import the package before any of
cli.py runs: __init__ calls `prepare()` first, which is a no-op unless this process is the
command. cli.main calls `quiet()` too, for callers that skip the package's import path.
This module imports nothing heavy.
"""

import logging
import os
import sys
import tempfile


def is_command(argv=None, orig_argv=None):
    """Whether this process is the `m3d` command: its console script or `python -m m3d_tf`."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(argv[0]) == "m3d":
        return True
    if "-m" in orig_argv:
        at = orig_argv.index("-m")
        return orig_argv[at + 1:at + 2] == ["m3d_tf"]
    return False


def prepare():
    """quiet(), if this process is the `m3d` command and was not given --verbose."""
    if is_command() and "--verbose" not in (getattr(sys, "orig_argv", None) or sys.argv):
        quiet()


def quiet():
    """TensorFlow's log off: call it before TensorFlow loads (later it changes little).

    TF_CPP_MIN_LOG_LEVEL=3 hides the C++ log once TensorFlow runs: the CPU-feature notice, the
    CUDA probing on machines without a GPU (an E-level line), and the "Type inference failed"
    protobuf dump of TensorFlow's graph type checker. That one comes from the gradient of the
    tf.cond inside a tf.cond in augment.apply (the warp: general or axis-aligned), whose
    branches keep intermediates of different dtypes; the step is correct, the line goes when the
    augmentation is "none", and a tf.switch_case in place of the two conds still prints it. A
    value the user set is kept. A real TensorFlow failure still reaches us as a Python
    exception.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _import_tensorflow_quietly()


def _import_tensorflow_quietly():
    """Imports TensorFlow with file descriptor 2 set aside, replaying it if the import fails.

    TensorFlow's libraries log while they load, before absl's logging is initialised, and those
    lines (oneDNN is on, no CUDA driver) ignore TF_CPP_MIN_LOG_LEVEL: C++ writes them to the
    process's stderr, past Python's sys.stderr.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)

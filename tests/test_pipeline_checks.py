"""pipelines/checks.py and pipelines/resources.py: bad settings fail while the pipeline is built.

Every case is a setting that would otherwise fail on the cluster, minutes or hours in; here it
fails in create_pipeline with one exact line, and the runners' main() print that line and exit
with status 2 before writing anything.
"""

import argparse

import pytest

from m3d_tf.data.catalog import DEBIAN_FASHION_MNIST_DIR
from pipelines import beam, kubeflow, local, pipeline, resources
from pipelines.checks import SettingsError, catalog_image_shape

pytestmark = pytest.mark.tfx

NODES = ("dataset_gen, m3d_condense, trainer, evaluator, pusher, statistics_gen, schema_gen, "
         "condensed_statistics_gen, example_validator")
KUBERNETES_CPU = "must be a positive Kubernetes CPU quantity such as 2, 0.5 or 500m."
KUBERNETES_MEMORY = "must be a positive Kubernetes memory quantity such as 8G, 512Mi or 2Gi."
ACCELERATOR = ("must be TYPE or TYPE:COUNT with COUNT >= 1, e.g. NVIDIA_TESLA_T4:1 (Vertex AI) or "
               "nvidia.com/gpu:1 (Kubernetes).")

# create_pipeline keywords -> the exact error.
BAD_SETTINGS = [
    ({"real_per_class": 30, "train_per_class": 20},
     "real_per_class=30 is larger than train_per_class=20: each condensation batch takes that "
     "many real images of every class from Split-train. Lower real_per_class or raise "
     "train_per_class."),
    ({"train_per_class": 100},
     "real_per_class=128 (the m3d recipe's) is larger than train_per_class=100: each "
     "condensation batch takes that many real images of every class from Split-train. Lower "
     "real_per_class or raise train_per_class."),
    ({"recipe": "dm", "train_per_class": 200},
     "real_per_class=256 (the dm recipe's) is larger than train_per_class=200: each "
     "condensation batch takes that many real images of every class from Split-train. Lower "
     "real_per_class or raise train_per_class."),
    ({"ipc": 0}, "ipc must be an integer >= 1. Received ipc=0."),
    ({"ipc": 2.5}, "ipc must be an integer >= 1. Received ipc=2.5."),
    ({"iterations": 0}, "iterations must be an integer >= 1. Received iterations=0."),
    ({"factor": 3},
     "source='fashion_mnist': factor=3 does not divide the image size 28x28; use a factor that "
     "divides both: 1, 2, 4, 7, 14, 28."),
    ({"source": "cifar10", "factor": 5},
     "source='cifar10': factor=5 does not divide the image size 32x32; use a factor that "
     "divides both: 1, 2, 4, 8, 16, 32."),
    ({"factor": 0}, "factor must be an integer >= 1. Received factor=0."),
    ({"recipe": "idc"}, "Unknown recipe='idc'; choose one of: dm, m3d."),
    ({"kernel": "gaussian"},
     "Unknown kernel='gaussian'; choose one of: gaussian_mix, linear, polynomial, rbf_fixed."),
    ({"init": "zeros"}, "Unknown init='zeros'; choose one of: mix, noise, real."),
    ({"protocol": "kip"}, "Unknown protocol='kip'; choose one of: dm, idc."),
    ({"arch": "resnet50"},
     "Unknown arch='resnet50'; choose one of: alexnet, convnet, mlp, resnet18, vgg11."),
    ({"eval_per_class": 0}, "eval_per_class must be an integer >= 1. Received eval_per_class=0."),
    ({"train_per_class": 0},
     "train_per_class must be an integer >= 1. Received train_per_class=0."),
    ({"test_per_class": -1}, "test_per_class must be an integer >= 1. Received test_per_class=-1."),
    ({"real_per_class": 0}, "real_per_class must be an integer >= 1. Received real_per_class=0."),
    ({"ipm": 0}, "ipm must be an integer >= 1. Received ipm=0."),
    ({"devices": "gpu0"},
     "devices='gpu0': 'gpu0' is not a local device name; give names such as \"/gpu:0,/gpu:1\", "
     "or leave devices empty for every visible GPU."),
    ({"devices": "/job:worker/gpu:0"},
     "devices='/job:worker/gpu:0': '/job:worker/gpu:0' is not a local device name; give names "
     "such as \"/gpu:0,/gpu:1\", or leave devices empty for every visible GPU."),
    ({"devices": "/gpu:0,GPU:0"},
     "devices='/gpu:0,GPU:0' names a device twice; name each device once."),
    ({"epochs": 0}, "epochs must be an integer >= 1. Received epochs=0."),
    ({"flip": "yes"},
     "flip must be True, False or None (the data's own). Received flip='yes'."),
    ({"learning_rate": 0.0}, "learning_rate must be a number > 0. Received learning_rate=0.0."),
    ({"accuracy_threshold": 1.5},
     "accuracy_threshold is a fraction in [0, 1]. Received accuracy_threshold=1.5."),
    ({"cpu": "two"}, f"cpu {KUBERNETES_CPU} Received 'two'."),
    ({"cpu": "0"}, f"cpu {KUBERNETES_CPU} Received '0'."),
    ({"memory": "8GB"}, f"memory {KUBERNETES_MEMORY} Received '8GB'."),
    ({"memory": "1.5G"}, f"memory {KUBERNETES_MEMORY} Received '1.5G'."),
    ({"node_cpu": {"m3d_condense": "8 cores"}},
     f"node_cpu['m3d_condense'] {KUBERNETES_CPU} Received '8 cores'."),
    ({"node_memory": {"trainer": "-1G"}},
     f"node_memory['trainer'] {KUBERNETES_MEMORY} Received '-1G'."),
    ({"node_cpu": {"condense": "8"}},
     f"node_cpu names 'condense', which is not a node of the pipeline; its nodes are: {NODES}."),
    ({"accelerators": {"trainer": "NVIDIA_TESLA_T4:0"}},
     f"accelerators['trainer'] {ACCELERATOR} Received 'NVIDIA_TESLA_T4:0'."),
    ({"accelerators": {"m3d_condense": "two T4"}},
     f"accelerators['m3d_condense'] {ACCELERATOR} Received 'two T4'."),
    ({"accelerators": {"evaluator": "NVIDIA_TESLA_T4"}},
     "accelerators['evaluator']: only m3d_condense and trainer train models and can use an "
     "accelerator. Remove it."),
]


@pytest.mark.parametrize("settings, message", BAD_SETTINGS,
                         ids=[",".join(s) for s, _ in BAD_SETTINGS])
def test_create_pipeline_rejects_a_bad_setting_in_one_line(tmp_path, settings, message):
    with pytest.raises(SettingsError) as error:
        pipeline.create_pipeline("m3d", tmp_path, **settings)
    assert str(error.value) == message
    assert "\n" not in message


@pytest.mark.parametrize("settings", [
    {"real_per_class": 20, "train_per_class": 20},  # equal is enough
    {"factor": 7},  # divides 28
    {"source": "cifar10", "factor": 8},
    {"recipe": "dm", "real_per_class": 16, "train_per_class": 16, "kernel": "polynomial",
     "init": "noise", "protocol": "dm", "arch": "mlp"},
    # Image size unknown before reading: DatasetGen/M3DCondense check it when they run.
    {"source": f"idx:{DEBIAN_FASHION_MNIST_DIR}", "factor": 3},
    {"cpu": "500m", "memory": "512Mi", "node_cpu": {"pusher": "0.5"},
     "accelerators": {"m3d_condense": "nvidia.com/gpu:2", "trainer": "NVIDIA_TESLA_T4"}},
])
def test_create_pipeline_accepts_settings_at_the_limits(tmp_path, settings):
    built = pipeline.create_pipeline("m3d", tmp_path, **settings)
    assert sorted(c.id for c in built.components) == sorted(NODES.split(", "))


def test_catalogued_image_shapes_come_without_data(tmp_path):
    assert catalog_image_shape("fashion_mnist") == (28, 28, 1)
    assert catalog_image_shape("cifar100") == (32, 32, 3)
    assert catalog_image_shape(f"idx:{DEBIAN_FASHION_MNIST_DIR}") is None
    assert catalog_image_shape("npz:mine.npz") is None


# command line -> the error create_pipeline (or the option parser) raises.
BAD_COMMAND_LINES = [
    (["--factor", "3"], BAD_SETTINGS[6][1]),
    (["--recipe", "idc"], "Unknown recipe='idc'; choose one of: dm, m3d."),
    (["--real-per-class", "64", "--train-per-class", "32"],
     "real_per_class=64 is larger than train_per_class=32: each condensation batch takes that "
     "many real images of every class from Split-train. Lower real_per_class or raise "
     "train_per_class."),
    (["--name", "m3d_fashion"],
     "pipeline_name='m3d_fashion' must match [a-z0-9][a-z0-9-]* (lowercase letters, digits and "
     "hyphens; Kubeflow rejects anything else), e.g. 'm3d-fashion-mnist'."),
]
KUBEFLOW_ONLY = [
    (["--node-cpu", "m3d_condense"],
     "--node-cpu takes NODE=VALUE, e.g. m3d_condense=8. Received 'm3d_condense'."),
    (["--memory", "8 GB"], f"memory {KUBERNETES_MEMORY} Received '8 GB'."),
    (["--accelerator", "evaluator=NVIDIA_TESLA_T4:1"],
     "accelerators['evaluator']: only m3d_condense and trainer train models and can use an "
     "accelerator. Remove it."),
]


@pytest.mark.parametrize("argv, message", BAD_COMMAND_LINES + KUBEFLOW_ONLY)
def test_kubeflow_main_prints_one_line_and_exits_2(tmp_path, capsys, argv, message):
    output = tmp_path / "m3d.json"
    with pytest.raises(SystemExit) as exit_:
        kubeflow.main(["--pipeline-root", "gs://bucket/m3d", "--output", str(output), *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"python -m pipelines.kubeflow: error: {message}\n"
    assert not output.exists()


@pytest.mark.parametrize("argv, message", BAD_COMMAND_LINES)
@pytest.mark.parametrize("runner", [local, beam])
def test_local_and_beam_main_print_one_line_and_exit_2(tmp_path, capsys, runner, argv, message):
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        runner.main(["--root", str(root), *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"python -m pipelines.{runner.__name__.split('.')[-1]}: " \
                                      f"error: {message}\n"
    assert not (root / "artifacts").exists()  # no component ran


@pytest.mark.parametrize("build, runner", [(local.local_pipeline, "LocalDagRunner"),
                                           (beam.beam_pipeline, "BeamDagRunner")])
def test_in_process_runners_reject_container_resources(tmp_path, build, runner):
    with pytest.raises(SettingsError) as error:
        build(tmp_path / "run", "m3d", cpu="2", accelerators={"trainer": "NVIDIA_TESLA_T4"})
    assert str(error.value) == (
        f"cpu, accelerators size Kubeflow containers; {runner} runs every component in this "
        "process and cannot apply them. Drop them, or compile with pipelines.kubeflow."
    )


@pytest.mark.parametrize("argv, flip, condense_flip", [
    ([], None, None), (["--flip"], True, 1), (["--no-flip"], False, 0)])
def test_flip_reaches_m3d_condense_and_not_the_trainer(tmp_path, argv, flip, condense_flip):
    """The runners' --flip/--no-flip (default None: the data's own) is an M3DCondense parameter,
    recorded in the set; the Trainer follows that record, so its custom_config carries none."""
    args = pipeline.argument_parser("test", "test").parse_args(argv)
    assert pipeline.settings(args)["flip"] is flip
    built = pipeline.create_pipeline("m3d", tmp_path, flip=flip)
    nodes = {c.id: c for c in built.components}
    assert nodes["m3d_condense"].exec_properties["flip"] == condense_flip
    assert "flip" not in nodes["trainer"].exec_properties["custom_config"]


def test_resource_options_become_create_pipeline_keywords():
    parser = resources.add_resource_arguments(argparse.ArgumentParser())
    args = parser.parse_args([
        "--cpu", "2", "--memory", "8G", "--node-cpu", "m3d_condense=8",
        "--node-memory", "m3d_condense=32Gi", "--node-memory", "trainer=16G",
        "--accelerator", "m3d_condense=NVIDIA_TESLA_T4:2",
        "--accelerator", "trainer=nvidia.com/gpu",
    ])
    assert resources.resource_settings(args) == {
        "cpu": "2", "memory": "8G", "node_cpu": {"m3d_condense": "8"},
        "node_memory": {"m3d_condense": "32Gi", "trainer": "16G"},
        "accelerators": {"m3d_condense": "NVIDIA_TESLA_T4:2", "trainer": "nvidia.com/gpu"},
    }
    assert resources.resource_settings(parser.parse_args([])) == {
        "cpu": None, "memory": None, "node_cpu": None, "node_memory": None, "accelerators": None,
    }


@pytest.mark.parametrize("cpu, cores", [("2", 2.0), ("0.5", 0.5), ("500m", 0.5), (".25", 0.25)])
def test_cpu_quantities(cpu, cores):
    assert resources.parse_cpu(cpu) == (cpu, cores)


@pytest.mark.parametrize("memory, gigabytes", [
    ("8G", 8.0), ("512M", 0.512), ("512Mi", 0.536870912), ("2Gi", 2.147483648),
    ("1000000000", 1.0), ("1T", 1000.0),
])
def test_memory_quantities_in_decimal_gigabytes(memory, gigabytes):
    text, value = resources.parse_memory(memory)
    assert text == memory and value == pytest.approx(gigabytes, rel=1e-12)

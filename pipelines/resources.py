"""Container resources of the M3D pipeline's nodes, for Kubeflow (pipelines.kubeflow).

Every node can carry CPU and memory, and m3d_condense and trainer an accelerator type and count,
as a KFP ResourceSpec platform config (`component.with_platform_config`) that TFX's Kubeflow V2
compiler copies into the node's executor: deploymentSpec.executors.<node>_executor.container.
resources of the compiled spec. Requests equal limits: Kubernetes guarantees the request and caps
at the limit, and Vertex AI sizes the machine from the limit.

LocalDagRunner and BeamDagRunner run the components in their own process, where a container
size means nothing, so local.py and beam.py reject these settings (reject_resources) instead of
ignoring them.
"""

import re

from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.checks import SettingsError

# The nodes that train TensorFlow models, the only ones an accelerator can speed up.
ACCELERATOR_NODES = ("m3d_condense", "trainer")
# create_pipeline keywords, also the keys of resource_settings(args).
RESOURCE_SETTINGS = ("cpu", "memory", "node_cpu", "node_memory", "accelerators")
ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Kubernetes quantities as the KFP SDK accepts them (kfp.dsl.PipelineTask.set_cpu_limit, ...).
_CPU = re.compile(r"([0-9]*\.)?[0-9]+m?")
_MEMORY = re.compile(r"([0-9]+)(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?")
_MEMORY_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
                 "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
                 "Ei": 2**60}
_ACCELERATOR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def parse_cpu(value, name="cpu"):
    """(text, cores) of a CPU quantity such as "2", "0.5" or "500m"; `name` for the error."""
    text = str(value)
    if not _CPU.fullmatch(text) or float(text.removesuffix("m")) == 0:
        raise SettingsError(
            f"{name} must be a positive Kubernetes CPU quantity such as 2, 0.5 or 500m. "
            f"Received {text!r}."
        )
    return text, float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def parse_memory(value, name="memory"):
    """(text, GB) of a memory quantity such as "8G" or "512Mi" (GB = 10^9 bytes, as KFP's)."""
    text = str(value)
    match = _MEMORY.fullmatch(text)
    if not match or int(match[1]) == 0:
        raise SettingsError(
            f"{name} must be a positive Kubernetes memory quantity such as 8G, 512Mi or 2Gi. "
            f"Received {text!r}."
        )
    return text, int(match[1]) * _MEMORY_UNITS[match[2]] / 10**9


def parse_accelerator(value, name="accelerator"):
    """(type, count) of "TYPE" (one) or "TYPE:COUNT", e.g. "NVIDIA_TESLA_T4:2"."""
    text = str(value)
    kind, colon, count = text.rpartition(":")
    if not colon:
        kind, count = text, "1"
    if not _ACCELERATOR_TYPE.fullmatch(kind) or not count.isdigit() or int(count) < 1:
        raise SettingsError(
            f"{name} must be TYPE or TYPE:COUNT with COUNT >= 1, e.g. NVIDIA_TESLA_T4:1 "
            f"(Vertex AI) or nvidia.com/gpu:1 (Kubernetes). Received {text!r}."
        )
    return kind, int(count)


def resource_spec(*, cpu=None, memory=None, accelerator=None):
    """The KFP ResourceSpec of one node (requests = limits), or None when nothing is set.

    The KFP SDK writes both forms of each value, the resource_* strings that newer backends
    read and the numbers (cores, GB) that older ones and Vertex AI read; so does this.

    Args:
        cpu: e.g. "2" or "500m". memory: e.g. "8G" or "512Mi". accelerator: "TYPE[:COUNT]".
    """
    if cpu is None and memory is None and accelerator is None:
        return None
    spec = ResourceSpec()
    if cpu is not None:
        text, cores = parse_cpu(cpu)
        spec.resource_cpu_request = spec.resource_cpu_limit = text
        spec.cpu_request = spec.cpu_limit = cores
    if memory is not None:
        text, gigabytes = parse_memory(memory)
        spec.resource_memory_request = spec.resource_memory_limit = text
        spec.memory_request = spec.memory_limit = gigabytes
    if accelerator is not None:
        kind, count = parse_accelerator(accelerator)
        spec.accelerator.type = spec.accelerator.resource_type = kind
        spec.accelerator.count = count
        spec.accelerator.resource_count = str(count)
    return spec


def check_resources(node_ids, *, cpu=None, memory=None, node_cpu=None, node_memory=None,
                    accelerators=None):
    """Raises SettingsError, naming the setting, for anything set_resources cannot apply."""
    if cpu is not None:
        parse_cpu(cpu)
    if memory is not None:
        parse_memory(memory)
    for name, per_node, parse in (("node_cpu", node_cpu, parse_cpu),
                                  ("node_memory", node_memory, parse_memory),
                                  ("accelerators", accelerators, parse_accelerator)):
        for node, value in (per_node or {}).items():
            if node not in node_ids:
                raise SettingsError(
                    f"{name} names {node!r}, which is not a node of the pipeline; its nodes "
                    f"are: {', '.join(node_ids)}."
                )
            parse(value, f"{name}[{node!r}]")
    for node in accelerators or {}:
        if node not in ACCELERATOR_NODES:
            raise SettingsError(
                f"accelerators[{node!r}]: only {' and '.join(ACCELERATOR_NODES)} train models "
                "and can use an accelerator. Remove it."
            )


def set_resources(components, *, cpu=None, memory=None, node_cpu=None, node_memory=None,
                  accelerators=None):
    """Gives every component its ResourceSpec platform config (module docstring).

    Args:
        components: the pipeline's components, with their ids.
        cpu, memory: the default of every node, e.g. "2", "8G".
        node_cpu, node_memory: {node id: value} replacing the default for those nodes.
        accelerators: {node id: "TYPE" or "TYPE:COUNT"}, for ACCELERATOR_NODES only.

    Raises:
        SettingsError: a malformed value, an unknown node id, an accelerator elsewhere.
    """
    check_resources([component.id for component in components], cpu=cpu, memory=memory,
                    node_cpu=node_cpu, node_memory=node_memory, accelerators=accelerators)
    for component in components:
        spec = resource_spec(
            cpu=(node_cpu or {}).get(component.id, cpu),
            memory=(node_memory or {}).get(component.id, memory),
            accelerator=(accelerators or {}).get(component.id),
        )
        if spec is not None:
            component.with_platform_config(spec)


def reject_resources(settings, runner):
    """Raises SettingsError if create_pipeline `settings` set container resources.

    Args:
        settings: create_pipeline keywords. runner: the runner's name, for the message.
    """
    given = [name for name in RESOURCE_SETTINGS if settings.get(name)]
    if given:
        raise SettingsError(
            f"{', '.join(given)} size Kubeflow containers; {runner} runs every component in "
            "this process and cannot apply them. Drop them, or compile with pipelines.kubeflow."
        )


def add_resource_arguments(parser):
    """Adds the container resource options (set_resources) of pipelines.kubeflow."""
    group = parser.add_argument_group(
        "container resources (requests = limits; NODE is a node id such as m3d_condense)")
    group.add_argument("--cpu", help="CPU of every step, a Kubernetes quantity: 2, 0.5, 500m")
    group.add_argument("--memory", help="memory of every step: 8G, 512Mi, 2Gi")
    group.add_argument("--node-cpu", action="append", default=[], metavar="NODE=CPU",
                       help="CPU of one step instead of --cpu, repeatable")
    group.add_argument("--node-memory", action="append", default=[], metavar="NODE=MEMORY",
                       help="memory of one step instead of --memory, repeatable")
    group.add_argument("--accelerator", action="append", default=[],
                       metavar="NODE=TYPE[:COUNT]",
                       help=f"accelerators of {' or '.join(ACCELERATOR_NODES)}, e.g. "
                            "m3d_condense=NVIDIA_TESLA_T4:1; repeatable")
    return parser


def _per_node(flag, items):
    """{node: value} of repeated NODE=VALUE options (None when there are none)."""
    values = {}
    for item in items:
        node, equals, value = item.partition("=")
        if not (node and equals and value):
            raise SettingsError(
                f"{flag} takes NODE=VALUE, e.g. m3d_condense=8. Received {item!r}."
            )
        values[node] = value
    return values or None


def resource_settings(args):
    """The create_pipeline resource keywords of parsed `add_resource_arguments` options.

    Raises:
        SettingsError: an option that is not NODE=VALUE.
    """
    return {"cpu": args.cpu, "memory": args.memory,
            "node_cpu": _per_node("--node-cpu", args.node_cpu),
            "node_memory": _per_node("--node-memory", args.node_memory),
            "accelerators": _per_node("--accelerator", args.accelerator)}

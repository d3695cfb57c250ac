"""Where pipelines.launcher runs a task's command: in its image, or in this environment.

ContainerRuntime runs the task in the image its spec names, through a Docker-compatible API
(podman's `podman system service`), as a cluster node would; InProcessRuntime runs the command as
a subprocess of this environment, for machines without a container engine. Both take the task's
argv (its command and args, placeholders substituted) and return its exit code, its output going
to a log file.
"""

import subprocess

from pipelines import resources as pipeline_resources


class LaunchError(RuntimeError):
    """A job that cannot be run here, or a task that failed; the message says which and why."""


class InProcessRuntime:
    """Runs a task's command as a subprocess of this environment (no image, no isolation).

    For machines without a container engine; it proves the spec's arguments and the executors,
    not the image.
    """

    name = "in-process"

    def run(self, task_name, container, argv, pipeline_root, log_path):
        del task_name, container, pipeline_root  # the image is not used
        with open(log_path, "wb") as log:
            return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, check=False).returncode


def container_limits(task_name, resources):
    """docker-py's nano_cpus and mem_limit for a task's ResourceSpec dict (its limits).

    Raises:
        LaunchError: the task requests an accelerator (there is none here).
    """
    accelerator = resources.get("accelerator", {})
    if accelerator.get("type") or accelerator.get("resourceType"):
        raise LaunchError(
            f"task {task_name!r} requests an accelerator ({accelerator}); this machine has "
            "none. Compile without accelerators to run it here."
        )
    # The compiler writes the numbers (cores, GB) and, for newer backends, the quantities.
    cpu = resources.get("cpuLimit")
    if cpu is None and resources.get("resourceCpuLimit"):
        cpu = pipeline_resources.parse_cpu(resources["resourceCpuLimit"])[1]
    memory = resources.get("memoryLimit")
    if memory is None and resources.get("resourceMemoryLimit"):
        memory = pipeline_resources.parse_memory(resources["resourceMemoryLimit"])[1]
    limits = {}
    if cpu:
        limits["nano_cpus"] = int(float(cpu) * 1e9)
    if memory:
        limits["mem_limit"] = int(float(memory) * 1e9)
    return limits


class ContainerRuntime:
    """Runs a task in its image through a Docker-compatible API (podman system service).

    As on a cluster node: the spec's command is the entrypoint, no network, the task's CPU and
    memory limits applied, and the pipeline root (the cluster's artifact store) mounted at the
    same path. The image must already be there: nothing is pulled.
    """

    name = "container"

    def __init__(self, base_url, network="none"):
        import docker  # TFX depends on docker-py; imported here so in-process runs need no socket

        self.base_url, self.network = base_url, network
        try:
            self.client = docker.DockerClient(base_url=base_url, timeout=600)
            self.client.ping()
        except Exception as error:  # docker raises several types for an unreachable socket
            raise LaunchError(
                f"no container engine answers at {base_url} ({error}); start one, e.g. "
                "`podman system service --time=0 unix:///tmp/podman.sock`, or use --in-process."
            ) from None

    def run(self, task_name, container, argv, pipeline_root, log_path):
        import docker

        image = container["image"]
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise LaunchError(
                f"task {task_name!r} runs in image {image!r}, which the engine at "
                f"{self.base_url} does not have; build it (`make image`) or compile with "
                "--image naming a local image."
            ) from None
        split = len(container.get("command", []))
        command, args = argv[:split], argv[split:]
        env = {item["name"]: item["value"] for item in container.get("env", [])}
        limits = container_limits(task_name, container.get("resources", {}))
        handle = self.client.containers.run(
            image, entrypoint=command, command=args, environment=env, detach=True,
            network_mode=self.network, labels={"m3d_tf.task": task_name},
            volumes={pipeline_root: {"bind": pipeline_root, "mode": "rw"}}, **limits,
        )
        try:
            status = handle.wait()
            with open(log_path, "wb") as log:
                log.write(handle.logs(stdout=True, stderr=True))
        finally:
            handle.remove(force=True)
        return int(status["StatusCode"])

"""Several machines: TF_CONFIG checked at the boundary, MultiWorkerMirroredStrategy, bounded waits.

Every worker runs the same program with its own TF_CONFIG (Kubeflow's TFJob sets it per pod):

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}'

    cluster = read_tf_config()            # ValueError on a malformed TF_CONFIG, before any TF op
    strategy = multi_worker_strategy(cluster, timeout=300)

TensorFlow alone waits forever for a worker that never starts (the task that leads the
coordination service blocks in the strategy's constructor, holding Python's GIL, so no thread
of ours can run), so `multi_worker_strategy` bounds that wait with a watchdog process and names
the workers that did not join. Once running, the
coordination service's heartbeat turns a worker that dies or goes silent into an
UnavailableError on the others (a killed process is noticed within seconds: its port refuses
connections); `cluster_failure` words that error for the user.

Only the chief writes (checkpoints, TensorBoard, the saved set): `is_writer(strategy)`.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

# Jobs MultiWorkerMirroredStrategy runs; "ps" and "evaluator" belong to other strategies.
_JOBS = ("chief", "worker")
_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}\'')
# The watchdog waits this much longer than the joining timeout, so that where TensorFlow's own
# deadline works (every task but the leader) its error, and exit status 2, comes first.
_GRACE = 15.0


class ClusterError(RuntimeError):
    """A task of the cluster did not join, or was lost mid-run; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """One task's view of the cluster in TF_CONFIG.

    Attributes:
        tasks: ((job, index, "host:port"), ...) in TensorFlow's order: the chief first, then
            the workers.
        task_type: this task's job, "chief" or "worker".
        task_index: this task's index within its job.
    """

    tasks: tuple
    task_type: str
    task_index: int

    @property
    def num_workers(self):
        return len(self.tasks)

    @property
    def is_chief(self):
        """The chief task, or worker 0 when there is no chief job (TensorFlow's rule)."""
        has_chief = any(job == "chief" for job, _, _ in self.tasks)
        return self.task_type == "chief" or (not has_chief and self.task_index == 0)

    @property
    def address(self):
        return next(a for j, i, a in self.tasks if (j, i) == (self.task_type, self.task_index))

    def peers(self):
        """The other tasks, as (job, index, address)."""
        return [t for t in self.tasks if (t[0], t[1]) != (self.task_type, self.task_index)]


def _bad(what):
    return ValueError(f"TF_CONFIG {what}; set it on every worker, e.g. {_EXAMPLE}")


def _address(job, index, value):
    host, sep, port = str(value).rpartition(":")
    if not (isinstance(value, str) and sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise _bad(f"cluster.{job}[{index}] is {value!r}, not a host:port address")
    return value


def parse_tf_config(text):
    """A Cluster from the JSON text of TF_CONFIG; ValueError naming the first problem."""
    if not text:
        raise ValueError(
            "--strategy multiworker reads the cluster from the TF_CONFIG environment variable, "
            f"which is not set; set it on every worker, e.g. {_EXAMPLE} (a Kubeflow TFJob sets "
            "it for you), or use --strategy mirrored on one machine."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(f"is not valid JSON ({error})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker", []), list):
        raise _bad('needs "cluster": {"worker": [addresses]}')
    other = sorted(set(cluster) - set(_JOBS))
    if other:
        raise _bad(f"names jobs {other}; MultiWorkerMirroredStrategy runs only chief and worker")
    if len(cluster.get("chief", [])) > 1:
        raise _bad(f"names {len(cluster['chief'])} chiefs; there can be one")
    tasks = tuple(
        (job, i, _address(job, i, a)) for job in _JOBS for i, a in enumerate(cluster.get(job, []))
    )
    if not tasks:
        raise _bad("names no worker")
    addresses = [a for _, _, a in tasks]
    if len(set(addresses)) != len(addresses):
        raise _bad(f"lists an address twice ({addresses}); each task needs its own port")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in _JOBS:
        raise _bad('needs "task": {"type": "worker" or "chief", "index": N} for this process')
    index = task.get("index")
    count = len(cluster.get(task["type"], []))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise _bad(f"task index is {index!r} but cluster.{task['type']} has {count} entries")
    return Cluster(tasks, task["type"], index)


def read_tf_config(environ=None):
    """The Cluster of this process, from os.environ["TF_CONFIG"] (or `environ`)."""
    return parse_tf_config((os.environ if environ is None else environ).get("TF_CONFIG", ""))


def probe(address, timeout=2.0):
    """Why `address` cannot take part, in a few words, or None when it accepts connections."""
    host, _, port = address.rpartition(":")
    try:
        socket.getaddrinfo(host, int(port))
    except socket.gaierror:
        return "its host name does not resolve"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "nothing listens there: is it started?"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return error.strerror or str(error)


def missing_workers(cluster, timeout=2.0):
    """'worker 1 at host:port (reason), ...' for the peers that refuse connections."""
    found = []
    for job, index, address in cluster.peers():
        reason = probe(address, timeout)
        if reason is not None:
            found.append(f"{job} {index} at {address} ({reason})")
    return ", ".join(found)


def _join_error(cluster, timeout):
    missing = missing_workers(cluster) or "every address accepts connections, so a task there " \
        "runs with a different TF_CONFIG"
    return (
        f"the cluster in TF_CONFIG did not come together within {timeout:g} s: {missing}. "
        "Start the same command on every task listed in TF_CONFIG, each with its own task index, "
        "or fix the addresses."
    )


def multi_worker_strategy(cluster, *, timeout=300.0):
    """MultiWorkerMirroredStrategy for `cluster`, or a clear error within about `timeout` s.

    Call it before any other TensorFlow op (TensorFlow configures collectives once, at start).

    Args:
        cluster: read_tf_config() of this process (TensorFlow reads the same TF_CONFIG).
        timeout: seconds every task has to start and join; also how long a running task may stay
            silent before the others give up on it (the coordination service's heartbeat).

    Returns:
        tf.distribute.MultiWorkerMirroredStrategy.

    Raises:
        ClusterError: a task did not join (the message names it and why). The task leading the
            coordination service would block forever inside TensorFlow; there a watchdog process
            prints the same message to stderr ("m3d: error: ...") after `timeout` + 15 s and
            kills this process (SIGKILL: status 137 in a shell).
    """
    import tensorflow as tf
    from tensorflow.python.eager import context

    milliseconds = int(timeout * 1000)
    # MultiWorkerMirroredStrategy sets the coordination service up with unbounded waits unless
    # it is already configured; this is its own configuration with our bounds.
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as pb

    jobs = [pb.CoordinatedJob(name=job, num_tasks=sum(t[0] == job for t in cluster.tasks))
            for job in _JOBS if any(t[0] == job for t in cluster.tasks)]
    leader = cluster.tasks[0][0]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0",
        cluster_register_timeout_in_ms=milliseconds, heartbeat_timeout_in_ms=milliseconds,
        shutdown_barrier_timeout_in_ms=milliseconds, coordinated_jobs=jobs,
    )

    # -P: not m3d_tf/ on sys.path, where io.py would shadow the standard library's.
    watchdog = subprocess.Popen(
        [sys.executable, "-P", __file__, str(os.getpid()), str(timeout)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        env=dict(os.environ, TF_CONFIG=json.dumps(_as_tf_config(cluster))),
    )
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.OpError, RuntimeError) as error:
        raise ClusterError(_join_error(cluster, timeout)) from error
    finally:
        watchdog.kill()
        watchdog.wait()


def _as_tf_config(cluster):
    jobs = {}
    for job, _, address in cluster.tasks:
        jobs.setdefault(job, []).append(address)
    return {"cluster": jobs, "task": {"type": cluster.task_type, "index": cluster.task_index}}


def _watch(parent, timeout):
    """The watchdog process: kills `parent` if it is still joining after timeout + _GRACE s."""
    deadline = time.monotonic() + timeout + _GRACE
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if os.getppid() != parent:  # the parent ended: nothing to watch
            return
    message = _join_error(read_tf_config(), timeout)
    print(f"m3d: error: {message}", file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)


def is_writer(strategy):
    """True where files should be written: everywhere but on a non-chief worker."""
    return bool(strategy.extended.should_checkpoint)


def cluster_failure(error, checkpoint_dir=None):
    """One line for a collective that failed mid-run (a worker died or went silent)."""
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    # TensorFlow's first line is often just "Graph execution error:"; the abort names the peer.
    told = [line for line in lines if "aborted by" in line] or [line for line in lines if line]
    cause = told[0] if told else type(error).__name__
    resume = (f"the last checkpoint is in {checkpoint_dir}; relaunch every worker with the same "
              "command plus --resume" if checkpoint_dir else "relaunch every worker")
    return f"the multi-worker run lost a worker ({type(error).__name__}: {cause[:200]}); {resume}."


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]))

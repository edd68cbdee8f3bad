"""Multi-worker training: who this process is in the cluster, and local worker processes for development.

A worker learns its place from `TF_CONFIG`, the JSON environment variable that
TensorFlow's MultiWorkerMirroredStrategy reads:
`{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": ..., "index": ...}}`.
Who writes it depends on the route:

- The Training Operator's TFJob (kubeflow.org/v1, release 1.9) sets it in every
  worker pod (kubeflow/trainer v1.9.4 pkg/controller.v1/tensorflow/tensorflow.go,
  genTFConfigJSONStr).
- Kubeflow Trainer v2's TrainJob does not: its pods are JobSet pods, and with the
  PlainML policy Trainer injects only the TrainJob's own `spec.trainer.env`
  (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/plainml/plainml.go).
  `jobset_tf_config()` builds TF_CONFIG inside the pod from what a JobSet pod has
  (see "TF_CONFIG from a JobSet pod" below), and `export_jobset_tf_config()` puts
  it in the environment before TensorFlow starts.

- `worker_role()` parses it once: how many workers train together and whether
  this one is the chief (the `chief` task, or worker 0 when there is no chief
  task, TensorFlow's own rule). Only the chief writes checkpoints, DVCLive and
  the export; the others write to a scratch folder they delete.
- `run_local_workers()` starts N copies of a command on 127.0.0.1, each with a
  TF_CONFIG naming free ports, so `petseg train --local-workers N` runs the
  same code path as a cluster. It watches them: when one fails or is killed,
  it stops the others at once and raises one PetsegError, so the run never
  hangs in a collective waiting for a dead peer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from petseg.components.core.errors import PetsegError

TF_CONFIG = "TF_CONFIG"
WORKER_TASK_TYPES = ("chief", "worker")  # the task types that train; "ps" and "evaluator" do not
LOCAL_HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 10.0  # after SIGTERM, how long a worker may take before SIGKILL
POLL_SECONDS = 0.2
AFTER_CHIEF_SECONDS = 120.0  # how long the other workers may run on after the chief exited 0
TAIL_LINES = 40  # lines of a worker's stderr kept to explain its failure


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the training workers (one worker, index 0, chief, without TF_CONFIG)."""

    workers: int = 1
    index: int = 0  # among chief + workers, the chief first
    task_type: str = "worker"
    is_chief: bool = True

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1


def worker_role(environ: Mapping[str, str] | None = None) -> WorkerRole:
    """The role TF_CONFIG gives this process, or a lone chief when it is unset; PetsegError if it is malformed."""
    raw = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not raw:
        return WorkerRole()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PetsegError(
            f"{TF_CONFIG} is not JSON ({exc.msg} at character {exc.pos}); "
            'unset it or give {"cluster": {...}, "task": {...}}'
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise PetsegError(f'{TF_CONFIG} has no "cluster" mapping (task type -> list of host:port)')
    cluster, task = config["cluster"], config.get("task") or {}
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise PetsegError(
                f'{TF_CONFIG} cluster.{task_type} must be a list of "host:port" strings; got {addresses!r}'
            )
    chiefs, others = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if chiefs > 1:
        raise PetsegError(f"{TF_CONFIG} names {chiefs} chiefs; a cluster has at most one")
    workers = chiefs + others
    if workers == 0:
        raise PetsegError(f"{TF_CONFIG} names no chief or worker tasks (cluster has: {', '.join(cluster) or 'none'})")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in WORKER_TASK_TYPES:
        raise PetsegError(
            f"{TF_CONFIG} task.type is {task_type!r}; `petseg train` runs as chief or worker "
            "(parameter servers and evaluators are not used)"
        )
    size = len(cluster.get(task_type, []))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise PetsegError(f"{TF_CONFIG} task.index {index!r} is not one of the {size} {task_type} task(s)")
    is_chief = task_type == "chief" or (chiefs == 0 and index == 0)
    return WorkerRole(
        workers=workers, index=index + (chiefs if task_type == "worker" else 0), task_type=task_type, is_chief=is_chief
    )


# --------------------------------------------------------------- TF_CONFIG from a JobSet pod
# A Kubeflow Trainer v2 TrainJob runs as a JobSet of the same name (kubeflow/trainer v2.3.0
# pkg/runtime/framework/plugins/jobset/jobset.go, (*JobSet).Build). JobSet v0.12.0 (the version Trainer
# v2.3.0's go.mod requires) names each child Job `<jobset>-<replicatedJob>-<jobIndex>`
# (pkg/util/placement/placement.go, GenJobName), makes it an Indexed Job whose pods are reachable as
# `<job>-<completionIndex>.<subdomain>` with the subdomain defaulting to the JobSet's name and a headless
# Service of that name (pkg/controllers/jobset_controller.go: constructJob, GetSubdomain,
# createHeadlessSvcIfNecessary; documented on Network.EnableDNSHostnames in api/jobset/v1alpha2/jobset_types.go),
# and labels each pod with its JobSet name, replicated Job name and Job index (labelAndAnnotateObject; keys in
# jobset_types.go). JobSet sets no environment variable from these; the TrainingRuntime that
# `petseg pipeline trainjob` writes (pipeline/trainjob.py) maps them in with the downward API, together with the
# completion index (the Indexed Job's `batch.kubernetes.io/job-completion-index` annotation, the field Trainer's
# torch plugin reads: pkg/constants/constants.go JobCompletionIndexFieldPath), and passes the node count as
# TrainJob env. Kubernetes also sets JOB_COMPLETION_INDEX in Indexed Job pods, used when the first is absent.
JOBSET_NAME_ENV = "PETSEG_JOBSET_NAME"  # label jobset.sigs.k8s.io/jobset-name (= the TrainJob's name)
REPLICATED_JOB_ENV = "PETSEG_REPLICATED_JOB"  # label jobset.sigs.k8s.io/replicatedjob-name ("node")
JOB_INDEX_ENV = "PETSEG_JOB_INDEX"  # label jobset.sigs.k8s.io/job-index (0: Trainer runs one trainer Job)
NODE_RANK_ENV = "PETSEG_NODE_RANK"  # annotation batch.kubernetes.io/job-completion-index
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in Indexed Job pods
NUM_NODES_ENV = "PETSEG_NUM_NODES"  # the TrainJob's numNodes, passed as trainer env
# For running the pods' code outside a cluster (tests, `bench`): a JSON object mapping the DNS address a
# pod would dial ("host:port") to one that resolves here ("127.0.0.1:port"). Never set in a cluster.
ADDRESS_MAP_ENV = "PETSEG_WORKER_ADDRESS_MAP"
WORKER_PORT = 2222  # every worker's gRPC port (the container port the TrainingRuntime declares)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _count(environ: Mapping[str, str], key: str, least: int) -> int:
    raw = environ.get(key, "").strip()
    if not raw.isdecimal() or int(raw) < least:
        raise PetsegError(f"{key} must be a whole number of at least {least} in a JobSet pod, got {raw!r}")
    return int(raw)


def jobset_worker_addresses(jobset: str, replicated_job: str, job_index: int, nodes: int) -> list[str]:
    """`host:port` of every node's pod: `<jobset>-<replicatedJob>-<jobIndex>-<i>.<jobset>` on WORKER_PORT."""
    return [f"{jobset}-{replicated_job}-{job_index}-{i}.{jobset}:{WORKER_PORT}" for i in range(nodes)]


def jobset_tf_config(environ: Mapping[str, str] | None = None) -> str | None:
    """The TF_CONFIG for this JobSet pod, or None when this is no JobSet pod (PETSEG_JOBSET_NAME unset).

    All nodes are `worker` tasks, so worker 0 is the chief (TensorFlow's rule,
    worker_role()). PetsegError names a missing or malformed variable.
    """
    env = os.environ if environ is None else environ
    jobset = env.get(JOBSET_NAME_ENV, "").strip()
    if not jobset:
        return None
    replicated_job = env.get(REPLICATED_JOB_ENV, "").strip()
    for key, value in ((JOBSET_NAME_ENV, jobset), (REPLICATED_JOB_ENV, replicated_job)):
        if not _DNS_LABEL.fullmatch(value):
            raise PetsegError(f"{key} must be a DNS label (the pod's JobSet labels), got {value!r}")
    job_index = _count(env, JOB_INDEX_ENV, 0)
    nodes = _count(env, NUM_NODES_ENV, 1)
    rank_key = NODE_RANK_ENV if env.get(NODE_RANK_ENV, "").strip() else COMPLETION_INDEX_ENV
    rank = _count(env, rank_key, 0)
    if rank >= nodes:
        raise PetsegError(f"{rank_key} {rank} is not one of the {nodes} node(s) {NUM_NODES_ENV} names")
    addresses = _mapped(jobset_worker_addresses(jobset, replicated_job, job_index, nodes), env)
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})


def _mapped(addresses: list[str], env: Mapping[str, str]) -> list[str]:
    """The addresses with ADDRESS_MAP_ENV applied (outside a cluster only); PetsegError if it misses one."""
    raw = env.get(ADDRESS_MAP_ENV, "").strip()
    if not raw:
        return addresses
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PetsegError(
            f"{ADDRESS_MAP_ENV} is not JSON ({exc.msg}); give an object mapping host:port to 127.0.0.1:port"
        ) from None
    if not isinstance(mapping, dict) or not all(isinstance(mapping.get(a), str) for a in addresses):
        missing = [a for a in addresses if not isinstance(mapping, dict) or not isinstance(mapping.get(a), str)]
        raise PetsegError(f"{ADDRESS_MAP_ENV} maps no local address for {missing[0]}")
    return [mapping[a] for a in addresses]


def export_jobset_tf_config(environ: MutableMapping[str, str] | None = None) -> str | None:
    """In a JobSet pod without TF_CONFIG, build it and set it (before TensorFlow reads it); return what was set.

    A TF_CONFIG already there (TFJob, or set by hand) is left alone: None.
    """
    env = os.environ if environ is None else environ
    if env.get(TF_CONFIG, "").strip():
        return None
    built = jobset_tf_config(env)
    if built is not None:
        env[TF_CONFIG] = built
    return built


# --------------------------------------------------------------- local workers
def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (held open together, so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind((LOCAL_HOST, 0))
        return [s.getsockname()[1] for s in sockets]


def local_tf_configs(ports: Sequence[int]) -> list[str]:
    """One TF_CONFIG per worker: all on 127.0.0.1, worker 0 the chief (no separate chief task, as in TFJob)."""
    cluster = {"worker": [f"{LOCAL_HOST}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(len(ports))]


@dataclass(frozen=True)
class LocalRun:
    """How a local multi-worker run went: the workers' pids and ports, and how long it took."""

    pids: tuple[int, ...]
    ports: tuple[int, ...]
    seconds: float


def run_local_workers(command: Sequence[str], workers: int, timeout_seconds: float | None = None, log=None) -> LocalRun:
    """Run `command` as `workers` processes on 127.0.0.1 with a TF_CONFIG each; wait for all of them.

    Worker 0 (the chief) keeps this process's stdout and stderr; the others' stdout
    is dropped and their stderr kept, so a failure names its last line. Their
    TMPDIR is one folder removed at the end, so a killed worker leaves no scratch
    behind. When any
    worker fails (non-zero exit or a signal), or `timeout_seconds` pass, the others
    are stopped (SIGTERM, then SIGKILL after STOP_GRACE_SECONDS) and PetsegError
    says which worker and why. Ctrl-C stops them all too.
    """
    if workers < 1:
        raise PetsegError(f"--local-workers must be at least 1, got {workers}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    ports = free_ports(workers)
    started = time.monotonic()
    processes: list[subprocess.Popen] = []
    last_lines: list[list[str]] = []
    scratch = tempfile.mkdtemp(prefix="petseg-local-workers-")  # the workers' TMPDIR: gone even if one is killed
    try:
        for index, tf_config in enumerate(local_tf_configs(ports)):
            env = {**os.environ, TF_CONFIG: tf_config, "TMPDIR": scratch}
            chief = index == 0
            process = subprocess.Popen(
                list(command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=None if chief else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            processes.append(process)
            last_lines.append([])
            threading.Thread(target=_follow, args=(process.stderr, last_lines[-1], chief), daemon=True).start()
        log(
            f"local workers: {workers} on {LOCAL_HOST} ports {', '.join(map(str, ports))} "
            f"(pids {', '.join(str(p.pid) for p in processes)}; worker 0 is the chief)"
        )
        _wait_all(processes, last_lines, started, timeout_seconds)
    finally:
        _stop(processes)
        shutil.rmtree(scratch, ignore_errors=True)
    return LocalRun(pids=tuple(p.pid for p in processes), ports=tuple(ports), seconds=time.monotonic() - started)


def _follow(stream, tail: list[str], forward: bool) -> None:
    """Read a worker's stderr to the end: forward it (the chief's), keep its last TAIL_LINES non-empty lines."""
    for line in stream:
        if forward and not _is_error_line(line):  # the launcher restates it in its own one line
            sys.stderr.write(line)
            sys.stderr.flush()
        if line.strip():
            tail.append(line.rstrip())
            del tail[:-TAIL_LINES]


def _is_error_line(line: str) -> bool:
    """The one line `petseg` prints for a user's mistake (cli.main)."""
    return line.startswith("petseg ") and ": error: " in line


def _failure_line(tail: list[str], forwarded: bool) -> str:
    """What a worker that exited non-zero said last: its one-line error, or (a bug) its traceback, shown once.

    A worker killed by a signal said nothing about it, so its last line is not repeated.
    """
    errors = [line for line in tail if _is_error_line(line)]
    if errors:
        return f": {errors[-1].split(': error: ', 1)[1]}"
    if any(line.startswith("Traceback") for line in tail) and not forwarded:
        sys.stderr.write("\n".join(tail) + "\n")  # a non-chief's traceback was not forwarded: show it now
    return f": {tail[-1]}" if tail else ""


def _wait_all(
    processes: list[subprocess.Popen], last_lines: list[list[str]], started: float, timeout_seconds: float | None
) -> None:
    """Return when every worker exited 0; PetsegError as soon as one fails or the time is up."""
    chief_done = None
    while True:
        codes = [p.poll() for p in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                time.sleep(POLL_SECONDS)  # let its stderr reader catch the last line
                said = "" if code < 0 else _failure_line(last_lines[index], forwarded=index == 0)
                raise PetsegError(
                    f"local worker {index} of {len(processes)} (pid {processes[index].pid}) "
                    f"{_exit_reason(code)}{said}; stopped the other workers, the run failed"
                )
        if all(code == 0 for code in codes):
            return
        if codes[0] == 0:  # the chief is done: the others finish together with it, or something is wrong
            chief_done = chief_done or time.monotonic()
            if time.monotonic() - chief_done > AFTER_CHIEF_SECONDS:
                waiting = [str(i) for i, code in enumerate(codes) if code is None]
                raise PetsegError(
                    f"local worker(s) {', '.join(waiting)} still running {AFTER_CHIEF_SECONDS:g} s "
                    "after the chief finished; stopped them (the chief's outputs are complete)"
                )
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise PetsegError(f"local workers still running after {timeout_seconds:g} s; stopped them all")
        time.sleep(POLL_SECONDS)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every worker still running, SIGKILL those still there after the grace period; reap all."""
    running = [p for p in processes if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def scratch_dir(role: WorkerRole, base: Path | None = None) -> Path:
    """A fresh private folder for a non-chief worker's writes (checkpoints, DVCLive, export), deleted after."""
    return Path(tempfile.mkdtemp(prefix=f"petseg-worker{role.index}-", dir=base))

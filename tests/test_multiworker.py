"""Multi-worker training: TF_CONFIG roles, the local worker launcher, and two real workers end to end."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from helpers import tiny_params_dict, write_synthetic_records
from hypothesis import given
from hypothesis import strategies as st

from petseg.components.core.errors import PetsegError
from petseg.components.ml import cluster
from petseg.components.ml.cluster import LOCAL_HOST, WorkerRole, local_tf_configs, run_local_workers, worker_role


# ------------------------------------------------------------------ TF_CONFIG
def _tf_config(cluster_spec: dict, task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster_spec, "task": {"type": task_type, "index": index}})}


def test_without_tf_config_this_process_is_a_lone_chief():
    assert worker_role({}) == WorkerRole(workers=1, index=0, task_type="worker", is_chief=True)
    assert not worker_role({"TF_CONFIG": "  "}).multi_worker


def test_a_chief_task_is_the_chief_and_workers_count_after_it():
    spec = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert worker_role(_tf_config(spec, "chief", 0)) == WorkerRole(3, 0, "chief", True)
    assert worker_role(_tf_config(spec, "worker", 0)) == WorkerRole(3, 1, "worker", False)
    assert worker_role(_tf_config(spec, "worker", 1)) == WorkerRole(3, 2, "worker", False)


def test_without_a_chief_task_worker_0_is_the_chief_as_tfjob_sets_it():
    spec = {"worker": ["a:1", "b:1"]}
    assert worker_role(_tf_config(spec, "worker", 0)).is_chief
    assert not worker_role(_tf_config(spec, "worker", 1)).is_chief
    assert worker_role(_tf_config(spec, "worker", 1)).multi_worker


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), 'no "cluster"'),
        (json.dumps({"cluster": {"worker": "a:1"}, "task": {"type": "worker"}}), 'list of "host:port"'),
        (json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}), "no chief or worker"),
        (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}), "task.type"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}), "task.index 2"),
        (json.dumps({"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}), "2 chiefs"),
    ],
)
def test_a_malformed_tf_config_is_one_line_naming_the_problem(raw, says):
    with pytest.raises(PetsegError) as err:
        worker_role({"TF_CONFIG": raw})
    assert says in str(err.value) and "\n" not in str(err.value)


@given(st.integers(1, 16))
def test_local_configs_give_every_worker_its_own_index_and_one_chief(n):
    roles = [worker_role({"TF_CONFIG": config}) for config in local_tf_configs(range(20000, 20000 + n))]
    assert [r.index for r in roles] == list(range(n))
    assert [r.is_chief for r in roles] == [True] + [False] * (n - 1)
    assert {r.workers for r in roles} == {n}
    addresses = json.loads(local_tf_configs(range(20000, 20000 + n))[0])["cluster"]["worker"]
    assert addresses == [f"{LOCAL_HOST}:{20000 + i}" for i in range(n)]


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = cluster.free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as s:
            s.bind((LOCAL_HOST, port))


# ------------------------------------------------------------------ the launcher (no TensorFlow: fast)
def _worker_script(body: str) -> list[str]:
    """A python command that knows its worker index as `i` and runs `body`."""
    prelude = "import json, os, signal, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
    return [sys.executable, "-c", prelude + body]


def test_launcher_waits_for_every_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    body = (
        f"open(r'{tmp_path}/w%d' % i, 'w').write(os.environ['TF_CONFIG'])\n"
        "open(os.path.join(os.environ['TMPDIR'], 'left-%d' % i), 'w').write('x')"
    )
    run = run_local_workers(_worker_script(body), 3, log=lambda line: None)
    assert list((tmp_path / "tmp").iterdir()) == []  # the workers' shared TMPDIR is removed
    configs = [json.loads((tmp_path / f"w{i}").read_text()) for i in range(3)]
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]
    assert configs[0]["cluster"]["worker"] == [f"{LOCAL_HOST}:{p}" for p in run.ports]
    assert len(set(run.pids)) == 3


def test_a_killed_worker_stops_the_others_at_once():
    body = "if i == 1:\n    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\nelse:\n    time.sleep(600)"
    started = time.monotonic()
    with pytest.raises(PetsegError) as err:
        run_local_workers(_worker_script(body), 2, log=lambda line: None)
    assert time.monotonic() - started < 30  # not the sleeping worker's 600 s
    message = str(err.value)
    assert "local worker 1 of 2" in message and "killed by SIGKILL" in message and "\n" not in message


def test_a_failing_worker_names_its_error_line():
    body = (
        "if i == 1:\n    print('petseg train: error: records gone', file=sys.stderr); sys.exit(1)\n"
        "else:\n    time.sleep(600)"
    )
    with pytest.raises(PetsegError, match=r"local worker 1 of 2 .*exited with status 1: records gone"):
        run_local_workers(_worker_script(body), 2, log=lambda line: None)


def test_launcher_timeout_stops_everyone():
    started = time.monotonic()
    with pytest.raises(PetsegError, match="still running after 1 s"):
        run_local_workers(_worker_script("time.sleep(600)"), 2, timeout_seconds=1, log=lambda line: None)
    assert time.monotonic() - started < 20


def test_workers_left_running_after_the_chief_finished_are_stopped(monkeypatch):
    monkeypatch.setattr(cluster, "AFTER_CHIEF_SECONDS", 1.0)
    started = time.monotonic()
    with pytest.raises(PetsegError, match=r"local worker\(s\) 1 still running 1 s after the chief finished"):
        run_local_workers(_worker_script("time.sleep(0 if i == 0 else 600)"), 2, log=lambda line: None)
    assert time.monotonic() - started < 20


# ------------------------------------------------------------------ two real workers (slow)
MODEL = {"architecture": "unet", "encoder_weights": "none", "unet": {"base_filters": 4, "depth": 2}}


@pytest.fixture
def worker_run(tmp_path):
    """A project folder with tiny 32 px records and params, and a TMPDIR the workers' scratch goes to."""
    write_synthetic_records(tmp_path / "records", 32, {"train": 32, "val": 8, "test": 8})
    raw = tiny_params_dict({"model": MODEL, "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "seed": 1}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    command = [
        sys.executable,
        "-m",
        "petseg",
        "train",
        "--records",
        "records",
        "--out",
        "models",
        "--live",
        "dvclive",
        "--local-workers",
        "2",
    ]
    return tmp_path, command, env


def _assert_serves_the_contract(savedmodel: Path) -> None:
    import tensorflow as tf
    from PIL import Image

    from petseg.components.contracts import signatures

    loaded = tf.saved_model.load(str(savedmodel))
    out = loaded.signatures[signatures.SIGNATURE_IMAGES](images=tf.zeros([2, 45, 70, 3], tf.uint8))
    assert out[signatures.OUTPUT_MASK].dtype == tf.uint8 and out[signatures.OUTPUT_MASK].shape == (2, 45, 70)
    probabilities = out[signatures.OUTPUT_PROBABILITIES].numpy()
    assert probabilities.shape == (2, 45, 70, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    png = io.BytesIO()
    Image.fromarray(np.full((21, 33, 3), 120, np.uint8)).save(png, format="PNG")
    by_bytes = loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant([png.getvalue()]))
    assert by_bytes[signatures.OUTPUT_MASK].shape == (1, 21, 33)
    names = (savedmodel / signatures.CLASS_NAMES_FILE).read_text().split()
    assert tuple(names) == tuple(signatures.CLASS_NAMES)


@pytest.mark.slow
def test_two_local_workers_train_and_the_chief_alone_exports(worker_run):
    root, command, env = worker_run
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: 2 local workers finished" in done.stdout
    assert "unet 2 epochs; best epoch" in done.stdout  # the chief's result line, once
    assert done.stdout.count("val mean IoU") == 1
    assert "MultiWorkerMirroredStrategy): worker 0 of 2 (chief)" in done.stderr
    _assert_serves_the_contract(root / "models/savedmodel")
    assert (root / "models/checkpoints/last/model.weights.h5").is_file()
    steps = [row.split("\t")[0] for row in (root / "dvclive/plots/metrics/loss/train.tsv").read_text().splitlines()]
    assert steps[1:] == ["0", "1"]  # the chief logged each epoch once; the other worker's DVCLive went to scratch
    assert list((root / "tmp").iterdir()) == []  # the non-chief deleted its scratch folder


@pytest.mark.slow
def test_killing_one_worker_fails_the_run_in_one_line(worker_run):
    root, command, env = worker_run
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["train"]["epochs"] = 50  # long enough to be killed in the middle
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    launcher = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in launcher.stderr:  # wait until the chief is training: the strategy is up on both workers
        lines.append(line)
        if "Epoch 1/" in line or "MultiWorkerMirroredStrategy)" in line:
            break
    pids = [int(p) for p in lines[0].split("(pids ")[1].split(";")[0].split(", ")]
    time.sleep(2)
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    rest = launcher.stderr.read()
    code = launcher.wait(timeout=120)
    assert time.monotonic() - killed_at < 60  # no hang in a collective waiting for the dead worker
    last = [line for line in rest.splitlines() if line.strip()][-1]
    assert code == 1
    assert last == (
        f"petseg train: error: local worker 1 of 2 (pid {pids[1]}) was killed by SIGKILL; "
        "stopped the other workers, the run failed"
    )
    assert not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE
    assert not (root / "models/savedmodel").exists()


# ------------------------------------------------------------------ resuming: every worker from the chief's checkpoint
def test_a_non_chief_resumes_from_a_copy_of_the_chiefs_checkpoint(tmp_path):
    from petseg.components import train as train_module

    chief_out = tmp_path / "models"
    last = chief_out / "checkpoints" / train_module.LAST_DIR
    last.mkdir(parents=True)
    state = train_module.RunState(signature="abc", epoch=3, best_epoch=2)
    (last / train_module.STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    (last / train_module.WEIGHTS_FILE).write_bytes(b"weights")
    (chief_out / "checkpoints" / train_module.BEST_WEIGHTS_FILE).write_bytes(b"best")

    scratch_out = train_module.copy_checkpoints(chief_out, tmp_path / "scratch" / "models")
    copied, _ = train_module.resumable_state(scratch_out / "checkpoints", "abc")
    assert copied == train_module.resumable_state(chief_out / "checkpoints", "abc")[0]
    assert copied is not None and copied.epoch == 3
    assert (scratch_out / "checkpoints" / train_module.BEST_WEIGHTS_FILE).read_bytes() == b"best"
    (scratch_out / "checkpoints" / train_module.BEST_WEIGHTS_FILE).write_bytes(b"scratch")  # its own writes
    assert (chief_out / "checkpoints" / train_module.BEST_WEIGHTS_FILE).read_bytes() == b"best"  # never the chief's


def test_without_a_chief_checkpoint_a_non_chief_starts_afresh_too(tmp_path):
    from petseg.components import train as train_module

    scratch_out = train_module.copy_checkpoints(tmp_path / "models", tmp_path / "scratch" / "models")
    assert train_module.resumable_state(scratch_out / "checkpoints", "abc")[0] is None


# ------------------------------------------------------------------ the CLI flag
@pytest.mark.parametrize(
    ("workers", "env", "says"),
    [
        ("0", {}, "--local-workers must be at least 1, got 0"),
        (
            "2",
            {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'},
            "TF_CONFIG is already set",
        ),
    ],
)
def test_local_workers_flag_mistakes_are_one_line(tmp_path, capsys, monkeypatch, workers, env, says):
    from petseg import cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    code = cli.main(
        [
            "train",
            "--records",
            str(tmp_path / "records"),
            "--out",
            str(tmp_path / "models"),
            "--params",
            str(tmp_path / "params.yaml"),
            "--local-workers",
            workers,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and says in err
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_an_interrupted_two_worker_run_resumes_on_both_workers_from_the_chiefs_checkpoint(worker_run):
    root, command, env = worker_run
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["train"]["epochs"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    state_file = root / "models/checkpoints/last/state.json"
    launcher = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = launcher.stderr.readline()
    pids = [int(p) for p in first.split("(pids ")[1].split(";")[0].split(", ")]
    deadline = time.monotonic() + 300
    while not state_file.is_file() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    os.kill(pids[0], signal.SIGKILL)  # the chief, after its first checkpoint
    launcher.stderr.read()
    assert launcher.wait(timeout=120) == 1
    done_epochs = json.loads(state_file.read_text())["epoch"]
    assert 1 <= done_epochs < 4

    # both workers must resume at the same epoch, or their all-reduces no longer pair up and the run fails
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=540)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"unet 4 epochs (resumed after epoch {done_epochs})" in again.stdout
    assert json.loads(state_file.read_text())["epoch"] == 4
    _assert_serves_the_contract(root / "models/savedmodel")
    assert list((root / "tmp").iterdir()) == []

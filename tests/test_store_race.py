"""Pushes racing from several machines into one S3 bucket (moto_server) never share a version.

Each racer is a separate process (tests/store_race_worker.py) with its own HOME
and TMPDIR: no flock, temporary file or fsspec instance is common, as between
two Kubeflow runs on two nodes. They connect first, then wait at a file barrier
and start together. Each race is repeated. After every race the store is
checked as TF Serving and the next push would read it:

- the versions the racers got are distinct, and each is one complete version
  folder whose saved_model.pb and lineage.json were written by that racer;
- models.config names only versions that are there;
- the record lists exactly the versions kept, and its history the served ones.

A racer that cannot get the lock in time is refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import moto_server

from petseg.components.store import storage
from petseg.components.store.model_store import CLAIMS_DIR, ModelStore

WORKER = Path(__file__).with_name("store_race_worker.py")
ROUNDS = 3


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        env = {
            "AWS_ACCESS_KEY_ID": "petseg-race",
            "AWS_SECRET_ACCESS_KEY": "petseg-race-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint,
        }
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def new_base(s3) -> str:
    name = f"petseg-race-{uuid.uuid4().hex[:8]}"
    storage.filesystem("s3://" + name).mkdir(name)
    return f"s3://{name}/serving"


def race(s3, tmp_path: Path, mode: str, base: str, racers: int, lock_timeout: float, keep: int) -> list[dict]:
    """Start `racers` worker processes on `base` together; their outcomes."""
    barrier = tmp_path / f"barrier-{uuid.uuid4().hex[:6]}"
    barrier.mkdir()
    procs = []
    for i in range(racers):
        home = tmp_path / f"machine-{barrier.name}-{i}"
        home.mkdir()
        env = {**os.environ, **s3, "HOME": str(home), "TMPDIR": str(home)}
        args = [mode, base, str(barrier), str(racers), str(lock_timeout), str(keep)]
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return outcomes


def test_version_claims_racing_without_any_lock_are_all_distinct(s3, tmp_path):
    """The claim alone (create-if-absent), with no lock around it, hands out each number once."""
    base = new_base(s3)
    claimed: list[int] = []
    for _ in range(ROUNDS):
        outcomes = race(s3, tmp_path, "claim", base, racers=5, lock_timeout=0, keep=3)
        versions = [o["version"] for o in outcomes]
        assert len(set(versions)) == len(versions) == 5, outcomes
        claimed += versions
    assert len(set(claimed)) == len(claimed) == 5 * ROUNDS
    assert sorted(int(n) for n in storage.listdir(storage.join(base, "petseg", CLAIMS_DIR))) == sorted(claimed)


def check_store(base: str, got: list[int], keep: int) -> None:
    store = ModelStore(base, keep_versions=keep)
    kept = store.version_numbers()
    assert kept == sorted(got)[-keep:]  # the newest `keep` of what the racers published
    for version in kept:
        files = storage.walk_files(store.version_path(version))
        assert sorted(files) == ["lineage.json", "saved_model.pb", "variables/variables.index"]
        lineage = json.loads(storage.read_text(storage.join(store.version_path(version), "lineage.json")))
        pb = storage.read_text(storage.join(store.version_path(version), "saved_model.pb"))
        assert lineage["version"] == version and pb == f"pid {lineage['pid']} version {version}"  # one writer
    config = store.read_serving_config()
    assert config is not None and set(config.versions) <= set(kept) and config.versions
    record = store.read_record()
    assert sorted(record["published"]) == kept and record["publishing"] == []
    assert sorted(e["version"] for e in record["history"]) == sorted(got)  # each served once, by its push
    assert store.served_version() == record["history"][-1]["version"]
    leftovers = [n for n in storage.listdir(store.root) if n.startswith((".staging-", ".deleting-"))]
    assert leftovers == [] and not storage.exists(storage.join(store.root, ".petseg-store.lock"))


def test_racing_publishes_under_the_store_lock_get_distinct_complete_versions(s3, tmp_path):
    base = new_base(s3)
    got: list[int] = []
    for _ in range(ROUNDS):
        outcomes = race(s3, tmp_path, "publish", base, racers=3, lock_timeout=120, keep=2)
        versions = [o["version"] for o in outcomes]
        assert len(set(versions)) == 3, outcomes
        got += versions
        check_store(base, got, keep=2)
    assert len(set(got)) == len(got)


def test_a_racer_that_cannot_get_the_lock_is_refused_in_one_line(s3, tmp_path):
    base = new_base(s3)
    got: list[int] = []
    refusals = []
    for _ in range(ROUNDS):
        outcomes = race(s3, tmp_path, "publish", base, racers=3, lock_timeout=0, keep=5)
        got += [o["version"] for o in outcomes if "version" in o]
        refusals += [o["error"] for o in outcomes if "error" in o]
        assert got and len(set(got)) == len(got)
        check_store(base, got, keep=5)
    assert refusals, "with lock_timeout 0 some racer found the lock taken"
    for line in refusals:
        assert "\n" not in line
        assert line.startswith(f"{base}/petseg is locked by another push or rollback (host ")
        assert f"if no push or rollback is running (one was killed), delete {base}/petseg/.petseg-store.lock" in line


@pytest.mark.slow
def test_two_real_pushes_racing_into_one_bucket_never_share_a_version(s3, tmp_path, rule_savedmodels):
    """`petseg push` twice at once, from two 'machines' (own HOME, TMPDIR, working folder), into one bucket.

    Both blessings were made against an empty store. Whichever takes the lock
    first publishes version 1; the other then finds the served version changed
    since its evaluation and is refused in one line, publishing nothing.
    """
    import yaml
    from helpers import tiny_params_dict, write_blessing

    from petseg.components.core.params import PushParams

    base = new_base(s3)
    params = PushParams(model_base_path=base, server_model_base_path="", warmup_requests=1)
    procs = []
    for name in ("perfect", "wrong_10"):
        machine = tmp_path / name
        (machine / "evaluation").mkdir(parents=True)
        blessing = write_blessing(rule_savedmodels[name], params, machine)
        blessing.rename(machine / "evaluation" / "blessing.json")
        push = {"model_base_path": base, "server_model_base_path": "", "warmup_requests": 1}
        (machine / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict({"push": push})))
        env = {**os.environ, **s3, "HOME": str(machine), "TMPDIR": str(machine), "TF_CPP_MIN_LOG_LEVEL": "3"}
        args = ["push", "--model", str(rule_savedmodels[name]), "--evaluation", "evaluation", "--records", "none"]
        args += ["--out", "push.json"]
        procs.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "petseg"), *args],
                cwd=machine,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [(proc, *proc.communicate(timeout=600)) for proc in procs]
    pushed = [r for r in results if r[0].returncode == 0]
    refused = [r for r in results if r[0].returncode != 0]
    assert len(pushed) == 1 and len(refused) == 1, [(r[0].returncode, r[2]) for r in results]
    (line,) = [x for x in refused[0][2].splitlines() if x.startswith("petseg push: error: ")]
    assert "the served version changed since evaluation (evaluated against None, now 1)" in line
    store = ModelStore(base)
    assert store.version_numbers() == [1] and store.served_version() == 1
    assert [e["version"] for e in store.read_record()["history"]] == [1]
    assert sorted(int(n) for n in storage.listdir(storage.join(store.root, CLAIMS_DIR))) == [1]

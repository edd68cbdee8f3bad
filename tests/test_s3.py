"""The model store, push, rollback, evaluate's baseline and a DVC remote on s3://, against a real S3 server.

The server is moto's (`moto_server`, from the test extra) on 127.0.0.1 and a
free port, started here and stopped when the tests end. Everything reaches it
as it would reach AWS or MinIO: s3fs and DVC read the endpoint and the
credentials from the usual environment variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import MOTO_SERVER, moto_server, write_blessing

from petseg.cli import main
from petseg.components.checks.drift import read_reference
from petseg.components.contracts.lineage import Lineage
from petseg.components.core.errors import PetsegError
from petseg.components.core.expectations import DRIFT_CHECKS
from petseg.components.core.params import EvaluateParams, Params, PushParams, params_to_dict
from petseg.components.drift_reference import drift_reference
from petseg.components.evaluate import evaluate
from petseg.components.push import push
from petseg.components.store import model_store, storage
from petseg.components.store.model_store import ModelStore
from petseg.components.store.warmup import validate_served_copy

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "petseg-test",
    "AWS_SECRET_ACCESS_KEY": "petseg-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}

pytestmark = pytest.mark.skipif(
    not os.path.exists(MOTO_SERVER), reason="moto_server not installed (pip install -e '.[test]')"
)


def _forget_s3_clients() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto S3 server running for this module; the environment points at it."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        saved = {key: os.environ.get(key) for key in [*S3_ENV, "AWS_ENDPOINT_URL_S3"]}
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL_S3=endpoint)
        _forget_s3_clients()  # s3fs caches clients: one made for another module's server would be reused
        try:
            yield endpoint
        finally:
            _forget_s3_clients()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """s3://<a new, empty bucket>."""
    name = f"petseg-{uuid.uuid4().hex[:10]}"
    storage.filesystem("s3://" + name).mkdir(name)
    return f"s3://{name}"


def publish_by_copy(model_dir: Path, params: PushParams, version: int, lineage: dict) -> None:
    """A version on the store as push leaves it (files, lineage.json, the store's record, models.config),
    through the store's own publish, without push's infra validation."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = storage.join(tmp, "staging")
        storage.copy_tree(str(model_dir), staging, last=model_store.SAVED_MODEL_FILE)
        storage.write_text_atomically(
            storage.join(staging, model_store.LINEAGE_FILE), json.dumps({"version": version, **lineage})
        )
        ModelStore.from_params(params).publish(staging, version, {"pushed_at": "2026-11-25T00:00:00+00:00"})
    ModelStore.from_params(params).serve_version(version, log=lambda _: None)


def write_validation_report(folder: Path) -> Path:
    """An accepted validation report of two examples, with every column the drift checks compare."""
    folder.mkdir(parents=True)
    columns = sorted({c for names, _ in DRIFT_CHECKS.values() for c in names})
    pd.DataFrame({c: [1.0, 2.0] for c in columns}).to_csv(folder / "examples.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"success": True, "fingerprint": "a" * 64}))
    return folder


def write_params(folder: Path, push_params: PushParams) -> str:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({**params_to_dict(Params()), "push": params_to_dict(push_params)}))
    return str(path)


# ------------------------------------------------------------------ the store
def test_storage_round_trips_on_s3(bucket, tmp_path):
    base = storage.join(bucket, "models")
    storage.write_text_atomically(storage.join(base, "petseg/1/saved_model.pb"), "pb")
    storage.write_bytes_atomically(storage.join(base, "petseg/1/variables/variables.index"), b"\x01")
    assert storage.listdir(base) == ["petseg"] and storage.isdir(storage.join(base, "petseg/1"))
    assert storage.walk_files(base) == ["petseg/1/saved_model.pb", "petseg/1/variables/variables.index"]
    with storage.local_copy(storage.join(base, "petseg/1")) as local:
        assert (Path(local) / "variables/variables.index").read_bytes() == b"\x01"
    storage.copy_tree(storage.join(base, "petseg/1"), storage.join(base, "petseg/2"), last="saved_model.pb")
    assert storage.listdir(storage.join(base, "petseg")) == ["1", "2"]
    storage.remove_tree(storage.join(base, "petseg/1"))
    assert storage.listdir(storage.join(base, "petseg")) == ["2"] and not storage.exists(storage.join(base, "petseg/1"))
    assert storage.listdir(storage.join(bucket, "nothing-here")) == []  # an empty prefix is an empty folder


def test_rollback_list_and_rollback_read_an_s3_store(bucket, rule_savedmodels, tmp_path, capsys):
    params = PushParams(model_base_path=storage.join(bucket, "serving"), keep_versions=3)
    publish_by_copy(
        rule_savedmodels["perfect"],
        params,
        1,
        {
            "git_commit": "a" * 40,
            "data_manifest_sha256": "b" * 64,
            "metrics": {"mean_iou": 0.9, "pixel_accuracy": 0.95},
        },
    )
    publish_by_copy(rule_savedmodels["wrong_10"], params, 2, {"git_commit": "c" * 40, "metrics": {"mean_iou": 0.8}})
    assert ModelStore.from_params(params).served_version() == 2
    config = storage.read_text(ModelStore.from_params(params).config_path)
    assert f'base_path: "{bucket}/serving/petseg"' in config  # TF Serving reads s3:// itself

    params_file = write_params(tmp_path, params)
    assert main(["rollback", "--list", "--params", params_file]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["2", "1"] and "*" in rows[0]
    assert "aaaaaaaa" in rows[1] and rows[1][-2] == "b" * 12 and "cccccccc" in rows[0]
    assert rows[1][-1] == "-"  # published without a card (as before cards existed)

    assert (
        ModelStore.from_params(params).rollback(infra_check=validate_served_copy).served == 1
        and ModelStore.from_params(params).served_version() == 1
    )
    assert [(i.version, i.served) for i in ModelStore.from_params(params).list_versions()] == [(2, False), (1, True)]


def test_evaluate_finds_its_baseline_on_s3(bucket, rule_savedmodels, coded_records, tmp_path):
    params = PushParams(model_base_path=storage.join(bucket, "serving"))
    publish_by_copy(rule_savedmodels["perfect"], params, 1, {})
    result = evaluate(
        rule_savedmodels["wrong_30"],
        coded_records,
        EvaluateParams(min_mean_iou=0.1, min_accuracy=0.1, max_regression=0.05),
        params,
        tmp_path / "ev",
    )
    assert result.baseline_version == 1 and result.baseline_mean_iou == pytest.approx(1.0)
    assert not result.blessed and "served version 1" in result.reason


def test_evaluate_stops_in_one_line_when_the_store_is_unreachable(
    bucket, rule_savedmodels, coded_records, tmp_path, monkeypatch
):
    params = PushParams(model_base_path=storage.join(bucket, "serving"))
    publish_by_copy(rule_savedmodels["perfect"], params, 1, {})

    def broken(*args, **kwargs):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(storage, "copy_tree", broken)
    with pytest.raises(Exception, match=r"cannot read the served model at s3://.*Access Denied"):
        evaluate(rule_savedmodels["perfect"], coded_records, EvaluateParams(), params, tmp_path / "ev")
    assert not (tmp_path / "ev").exists()


def test_validate_stops_in_one_line_when_the_served_reference_is_unreachable(bucket, monkeypatch):
    params = PushParams(model_base_path=storage.join(bucket, "serving"))

    def denied(*args, **kwargs):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(storage, "listdir", denied)
    monkeypatch.setattr(storage, "isdir", denied)
    with pytest.raises(PetsegError, match=r"cannot read which version is served at s3://.*Access Denied") as caught:
        drift_reference("served", ModelStore.from_params(params))
    assert "\n" not in str(caught.value)


# push stages in a local folder on object stores (storage.local_workdir): TensorFlow writes the warm-up
# file and loads the staged copy, and cannot reach s3://.
def test_push_publishes_a_version_and_models_config_on_s3(bucket, rule_savedmodels, coded_records, tmp_path, capsys):
    """push -> evaluate (baseline from S3) -> push again -> rollback --list, all on s3://."""
    params = PushParams(model_base_path=storage.join(bucket, "serving"), keep_versions=1, warmup_requests=2)
    lineage = Lineage(git_commit="e" * 40, data_manifest_sha256="f" * 64)
    report = write_validation_report(tmp_path / "validation")
    first = push(
        rule_savedmodels["perfect"],
        write_blessing(rule_savedmodels["perfect"], params, tmp_path),
        params,
        lineage,
        drift_reference=report,
    )
    assert first.status == "pushed" and first.version == 1
    files = storage.walk_files(ModelStore.from_params(params).version_path(1))
    assert {"saved_model.pb", "lineage.json", "assets.extra/tf_serving_warmup_requests"} <= set(files)
    assert {"drift_reference/summary.json", "drift_reference/examples.csv"} <= set(files)
    # the model card is published with the version, in the bucket
    assert {"model_card/model_card.html", "model_card/model_card.md", "model_card/model_card.json"} <= set(files)
    assert first.card == storage.join(ModelStore.from_params(params).version_path(1), "model_card")
    card = json.loads(storage.read_text(storage.join(first.card, "model_card.json")))
    assert card["model"]["version"] == 1 and card["lineage"]["git_commit"] == "e" * 40
    assert storage.listdir(ModelStore.from_params(params).root) == [
        model_store.CLAIMS_DIR,
        model_store.RECORD_FILE,
        "1",
    ]  # nothing staged left

    # The next validate reads that report back from the bucket as its drift reference.
    reference = drift_reference("served", ModelStore.from_params(params))
    assert reference == storage.join(ModelStore.from_params(params).version_path(1), "drift_reference")
    table, fingerprint = read_reference(reference)
    assert fingerprint == "a" * 64 and table.equals(pd.read_csv(report / "examples.csv"))

    result = evaluate(
        rule_savedmodels["wrong_10"],
        coded_records,
        EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, max_regression=0.5),
        params,
        tmp_path / "ev",
    )
    assert result.blessed and result.baseline_version == 1
    second = push(rule_savedmodels["wrong_10"], tmp_path / "ev", params, lineage)
    assert second.version == 2 and second.removed_versions == [1]
    assert storage.listdir(ModelStore.from_params(params).root) == [
        model_store.CLAIMS_DIR,
        model_store.RECORD_FILE,
        "2",
    ]
    assert ModelStore.from_params(params).served_version() == 2

    capsys.readouterr()  # push's progress lines
    assert main(["rollback", "--list", "--params", write_params(tmp_path, params)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["2"] and "eeeeeeee" in rows[0] and rows[0][-2] == "f" * 12
    assert rows[0][-1] == storage.join(ModelStore.from_params(params).version_path(2), "model_card", "model_card.html")


# ------------------------------------------------------------------ DVC remote
@pytest.mark.slow
def test_a_dvc_s3_remote_round_trips_into_a_fresh_clone(bucket, s3_endpoint, tmp_path):
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )

    def run(*cmd: str, cwd: Path) -> str:
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    dvc = [sys.executable, "-m", "dvc"]
    repo = tmp_path / "repo"
    (repo / "data/records").mkdir(parents=True)
    payload = {
        "data/records/train-00000-of-00001.tfrecord": os.urandom(200_000),
        "data/records/manifest.json": b'{"image_size": 32}\n',
    }
    for rel, data in payload.items():
        (repo / rel).write_bytes(data)
    run("git", "init", "-q", cwd=repo)
    run(*dvc, "init", "-q", cwd=repo)
    run(*dvc, "remote", "add", "-d", "store", f"{bucket}/dvc", cwd=repo)
    run(*dvc, "remote", "modify", "store", "endpointurl", s3_endpoint, cwd=repo)
    run(*dvc, "add", "-q", "data/records", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "records", cwd=repo)
    run(*dvc, "push", cwd=repo)
    assert storage.walk_files(f"{bucket}/dvc")  # the objects are on the S3 server

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data/records").exists()
    run(*dvc, "pull", cwd=clone)
    for rel, data in payload.items():
        assert (clone / rel).read_bytes() == data


# ------------------------------------------------------- failed validation evidence
def test_a_failed_validation_uploads_its_report_to_an_s3_artifact_uri(bucket, tmp_path, capsys):
    from petseg.pipeline.component_io import keep_validation_report

    page = tmp_path / "validation" / "data_docs" / "validations" / "suite" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html>mask_values_in_trimap_set failed</html>")
    uri = f"{bucket}/pipeline-root/run/validate/report"
    assert keep_validation_report(tmp_path / "validation", tmp_path / "out" / "report", uri, failed=True)
    assert storage.read_text(uri) == page.read_text() == (tmp_path / "out" / "report").read_text()
    assert f"the report was uploaded to {uri}" in capsys.readouterr().out

    # An unreachable store is reported in the log, never raised over the validation's own error.
    unreachable = "s3://no-such-bucket-petseg/report"
    assert keep_validation_report(tmp_path / "validation", tmp_path / "out2" / "report", unreachable, failed=True)
    assert f"could not upload the report to {unreachable}" in capsys.readouterr().out
    assert not keep_validation_report(tmp_path / "empty", tmp_path / "out3" / "report", uri, failed=True)

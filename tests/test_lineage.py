"""lineage: one record for both runners (CLI/DVC and Kubeflow)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from petseg.components.contracts.blessing import Blessing
from petseg.components.contracts.lineage import (
    COMMIT_ENV,
    KeptDriftReference,
    VersionRecord,
    collect_lineage,
    params_hash,
    version_record,
)
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.fsutil import write_json
from petseg.components.core.params import Params, params_to_dict, with_overrides


def test_the_cli_record_has_code_params_data_and_a_run_id(coded_records, tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    env = "git -c user.email=t@t -c user.name=t"
    subprocess.run(f"cd {tmp_path} && git init -q && {env} commit -q --allow-empty -m x", shell=True, check=True)
    record = collect_lineage(coded_records, Params(), repo_dir=tmp_path)
    assert record.runner == "cli" and record.run_id.startswith("cli-")
    assert record.git_commit is not None and len(record.git_commit) == 40 and record.git_dirty is False
    assert record.data_manifest_sha256 == sha256_file(coded_records / "manifest.json")
    assert record.validation_fingerprint is None  # these records' manifest names no validation
    assert record.params == params_to_dict(Params()) and record.params_sha256 == params_hash(params_to_dict(Params()))
    assert "metrics" not in record.to_json() and not record.artifacts


def test_the_record_names_the_validation_the_records_came_from(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    write_json(records / "manifest.json", {"image_size": 32, "raw_fingerprint": "f" * 64})
    # preprocess copies the validation summary's fingerprint into the manifest; lineage carries it on.
    assert collect_lineage(records, Params(), repo_dir=tmp_path).validation_fingerprint == "f" * 64
    assert collect_lineage(None, Params(), repo_dir=tmp_path).validation_fingerprint is None


def test_the_kubeflow_record_takes_commit_data_and_metrics_from_the_image_and_blessing(tmp_path, monkeypatch):
    blessing = tmp_path / "blessing.json"
    write_json(
        blessing,
        {
            "blessed": True,
            "reason": "passed",
            "candidate": {"mean_iou": 0.7, "pixel_accuracy": 0.9},
            "data": {"manifest_sha256": "d" * 64},
        },
    )
    params = with_overrides(Params(), {"train.epochs": 3})
    not_git = tmp_path / "pod"
    not_git.mkdir()

    monkeypatch.delenv(COMMIT_ENV, raising=False)
    record = collect_lineage(
        None,
        params,
        repo_dir=not_git,
        blessing_file=blessing,
        runner="kubeflow",
        run_id="run-1",
        run_name="petseg-x",
        code_commit="c" * 40,
        code_images={"train": "reg/seg-gpu:0.1.0-gcccc"},
        artifacts={"model_artifact": "minio://b/model", "not_an_artifact_key": "x"},
    )
    assert record.git_commit == "c" * 40 and record.git_dirty is None  # from the compiled image tag
    assert record.data_manifest_sha256 == "d" * 64
    assert record.params["train"]["epochs"] == 3
    assert (record.runner, record.run_id, record.run_name) == ("kubeflow", "run-1", "petseg-x")
    assert record.code_images == {"train": "reg/seg-gpu:0.1.0-gcccc"}
    assert record.artifacts == {"model_artifact": "minio://b/model"}
    assert record.to_json()["model_artifact"] == "minio://b/model"  # a top-level key, as lineage.json always had

    monkeypatch.setenv(COMMIT_ENV, "e" * 40)  # the image says which commit it was built from: that wins
    assert collect_lineage(None, params, repo_dir=not_git, code_commit="c" * 40).git_commit == "e" * 40
    assert collect_lineage(None, params, repo_dir=not_git).data_manifest_sha256 is None


# ------------------------------------------------------------ the stored record
def _blessing(**data) -> Blessing:
    return Blessing(
        blessed=True,
        reason="passed",
        checks=({"name": "min_mean_iou", "passed": True, "value": 0.7, "threshold": 0.5, "text": "t"},),
        candidate={"mean_iou": 0.7, "pixel_accuracy": 0.9, "iou": {"pet": 0.6}},
        baseline={"version": 2, "mean_iou": 0.65},
        thresholds={"min_mean_iou": 0.5},
        model_fingerprint="m" * 64,
        data={"image_size": 64, "manifest_sha256": "d" * 64, **data},
    )


def test_the_version_record_writes_the_lineage_json_format_push_always_wrote(tmp_path):
    lineage = collect_lineage(None, Params(), repo_dir=tmp_path, run_id="run-7")
    kept = KeptDriftReference("drift_reference", "reports/validation", "f" * 64)
    record = version_record(lineage, _blessing(), "petseg", "models/savedmodel", kept)
    record = replace(record, version=3).published("2026-12-06T10:00:00+00:00", {"requests": 4})
    written = json.loads(record.to_text())
    # the keys lineage.json had before the records were typed, all at the top level
    assert {
        "runner",
        "run_id",
        "run_name",
        "git_commit",
        "git_dirty",
        "code_images",
        "data_manifest_sha256",
        "validation_fingerprint",
        "params",
        "model_name",
        "version",
        "source_model",
        "model_fingerprint",
        "metrics",
        "blessing",
        "data",
        "drift_reference",
        "pushed_at",
        "infra_validation",
    } <= set(written)
    assert written["version"] == 3 and written["metrics"]["mean_iou"] == 0.7
    assert written["blessing"]["baseline"] == {"version": 2, "mean_iou": 0.65}
    assert (
        written["drift_reference"]
        == kept.to_json()
        == {
            "dir": "drift_reference",
            "source": "reports/validation",
            "fingerprint": "f" * 64,
        }
    )
    assert VersionRecord.from_json(written) == record


def test_an_older_lineage_json_reads_with_what_it_has(tmp_path):
    """A record written before push kept drift references, params hashes or infra validation."""
    old = {
        "git_commit": "a" * 40,
        "data_manifest_sha256": "d" * 64,
        "metrics": {"mean_iou": 0.8},
        "version": 1,
        "pushed_at": "2025-01-01T00:00:00+00:00",
        "blessing": {"blessed": True, "reason": "ok", "checks": "not a list"},
        "drift_reference": "not a mapping",
    }
    record = VersionRecord.from_json(old)
    assert record.lineage.git_commit == "a" * 40 and record.version == 1 and record.metrics == {"mean_iou": 0.8}
    assert record.blessing.blessed is True and record.blessing.checks == ()
    assert record.drift_reference is None and record.lineage.params_sha256 is None and record.infra_validation == {}
    assert VersionRecord.from_text("{not json") is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
KEYS = st.sampled_from(
    [
        "runner",
        "run_id",
        "git_commit",
        "git_dirty",
        "params",
        "version",
        "metrics",
        "blessing",
        "data",
        "drift_reference",
        "pushed_at",
        "infra_validation",
        "code_images",
        "model_artifact",
        "other",
    ]
)


@given(st.dictionaries(KEYS, JSON_VALUES) | JSON_VALUES)
@settings(max_examples=200, deadline=None)
def test_any_json_reads_as_a_record_and_round_trips(data):
    """Whatever a lineage.json holds, reading never raises, and what is read writes back the same."""
    record = VersionRecord.from_json(data)
    assert VersionRecord.from_json(json.loads(record.to_text())) == record

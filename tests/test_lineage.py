"""lineage: one record for both runners (CLI/DVC and Kubeflow)."""

from __future__ import annotations

import subprocess

from petseg.components.contracts.lineage import COMMIT_ENV, collect_lineage
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.fsutil import write_json
from petseg.components.core.params import Params, params_to_dict, with_overrides


def test_the_cli_record_has_code_params_data_and_a_run_id(coded_records, tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    env = "git -c user.email=t@t -c user.name=t"
    subprocess.run(f"cd {tmp_path} && git init -q && {env} commit -q --allow-empty -m x", shell=True, check=True)
    record = collect_lineage(coded_records, Params(), repo_dir=tmp_path)
    assert record["runner"] == "cli" and record["run_id"].startswith("cli-")
    assert len(record["git_commit"]) == 40 and record["git_dirty"] is False
    assert record["data_manifest_sha256"] == sha256_file(coded_records / "manifest.json")
    assert record["validation_fingerprint"] is None  # these records' manifest names no validation
    assert record["params"] == params_to_dict(Params()) and "metrics" not in record


def test_the_record_names_the_validation_the_records_came_from(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    write_json(records / "manifest.json", {"image_size": 32, "raw_fingerprint": "f" * 64})
    # preprocess copies the validation summary's fingerprint into the manifest; lineage carries it on.
    assert collect_lineage(records, Params(), repo_dir=tmp_path)["validation_fingerprint"] == "f" * 64
    assert collect_lineage(None, Params(), repo_dir=tmp_path)["validation_fingerprint"] is None


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
    )
    assert record["git_commit"] == "c" * 40 and record["git_dirty"] is None  # from the compiled image tag
    assert record["data_manifest_sha256"] == "d" * 64 and record["metrics"]["mean_iou"] == 0.7
    assert record["params"]["train"]["epochs"] == 3
    assert (record["runner"], record["run_id"], record["run_name"]) == ("kubeflow", "run-1", "petseg-x")
    assert record["code_images"] == {"train": "reg/seg-gpu:0.1.0-gcccc"}

    monkeypatch.setenv(COMMIT_ENV, "e" * 40)  # the image says which commit it was built from: that wins
    assert collect_lineage(None, params, repo_dir=not_git, code_commit="c" * 40)["git_commit"] == "e" * 40
    assert collect_lineage(None, params, repo_dir=not_git)["data_manifest_sha256"] is None

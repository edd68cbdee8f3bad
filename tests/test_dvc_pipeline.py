"""End to end: `dvc repro`, `dvc exp run`, queued sweeps and `dvc plots` on a tiny synthetic set in a
temporary git + DVC repository."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, tiny_params_dict
from PIL import Image

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "validate", "preprocess"]


DVC = [sys.executable, "-m", "dvc"]
# A model that trains in seconds: the DVC semantics are under test here, not the model.
TINY_TRAINING = {
    "model": {"architecture": "unet", "encoder_weights": "none", "unet": {"base_filters": 4, "depth": 2}},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "seed": 1},
}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _make_repo(repo: Path, params: dict) -> Path:
    """A git + DVC repo holding this project's pipeline, code and `params`, with one commit."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    (repo / "data/archives").mkdir(parents=True)  # the download stage's source dependency
    shutil.copy(REPO_ROOT / "data/archives/README.md", repo / "data/archives/README.md")
    for folder in ("components", "src", "pipeline", "serving"):
        shutil.copytree(REPO_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "models"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "test@petseg.invalid"], repo)
    _run(["git", "config", "user.name", "petseg tests"], repo)
    _run([*DVC, "init", "-q"], repo)
    _commit(repo, "pipeline")  # DVCLive needs a commit to name the experiment's baseline
    return repo


def _commit(repo: Path, message: str) -> None:
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", message], repo)


def _steps(repo: Path) -> list[int]:
    """DVCLive's steps in the train loss history: [0] is one fresh epoch."""
    with open(repo / "dvclive/plots/metrics/loss/train.tsv") as f:
        return [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]


def _experiments(repo: Path) -> list[dict]:
    """`dvc exp show --csv` rows of the experiments (not the workspace or baseline rows)."""
    shown = _run([*DVC, "exp", "show", "--csv"], repo).stdout
    header = next(csv.reader(io.StringIO(shown)))
    assert len(header) == len(set(header)), "a metric and a param share a column name"
    return [row for row in csv.DictReader(io.StringIO(shown)) if row["typ"] in ("branch_base", "branch_commit")]


@pytest.fixture(scope="module")
def trained_master(tmp_path_factory) -> Path:
    """A repo where `dvc repro` ran the pipeline (2 epochs) and dvc.lock is committed; tests work on copies."""
    repo = _make_repo(tmp_path_factory.mktemp("trained") / "repo", tiny_params_dict(TINY_TRAINING))
    _run([*DVC, "repro"], repo)
    _commit(repo, "a finished 2-epoch run")
    return repo


@pytest.fixture
def trained_repo(trained_master, tmp_path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(trained_master, repo, symlinks=True)
    return repo


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A throwaway git + DVC repo holding this project's pipeline, code and tiny params."""
    return _make_repo(tmp_path / "repo", tiny_params_dict())


def _ran_stages(output: str) -> set[str]:
    return {stage for stage in DATA_STAGES if f"Running stage '{stage}'" in output}


def test_data_stages_run_once_and_rerun_only_what_changed(dvc_repo):
    first = _run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], dvc_repo)
    assert _ran_stages(first.stdout) == set(DATA_STAGES)
    assert (dvc_repo / "data/raw/examples.csv").is_file()
    assert (dvc_repo / "reports/validation/summary.json").is_file()
    assert list((dvc_repo / "data/records").glob("train-*.tfrecord"))

    second = _run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], dvc_repo)
    assert _ran_stages(second.stdout) == set(), second.stdout

    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["preprocess"]["image_size"] = 48
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    third = _run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], dvc_repo)
    assert _ran_stages(third.stdout) == {"preprocess"}, third.stdout


def test_exp_with_fewer_epochs_after_a_finished_run_trains_one_fresh_epoch(trained_repo):
    assert _steps(trained_repo) == [0, 1]
    assert (trained_repo / "models/checkpoints/last/state.json").is_file()  # persisted: still there for the exp

    proc = _run([*DVC, "exp", "run", "train", "-S", "train.epochs=1", "-n", "one-epoch"], trained_repo)
    assert "train: fresh run " in proc.stderr and "resuming" not in proc.stderr
    assert _steps(trained_repo) == [0]  # DVCLive step 0: a new history, not the 2-epoch one
    headline = json.loads((trained_repo / "models/metrics.json").read_text())
    assert headline["epochs_run"] == 1 and headline["best_epoch"] == 1

    (shown,) = _experiments(trained_repo)
    assert shown["Experiment"] == "one-epoch" and shown["train.epochs"] == "1" and shown["epochs_run"] == "1"
    assert "train.loss" in shown and shown["train.loss"] == "sparse_ce"  # the param, no metric of that name


def test_touching_the_serving_contract_marks_train_changed(trained_repo):
    def status(stage: str) -> dict:
        return json.loads(_run([*DVC, "status", stage, "--json"], trained_repo).stdout)

    assert status("train") == {}
    contract = trained_repo / "components/contracts/signatures.py"
    contract.write_text(contract.read_text() + "\n# touched\n")
    assert {"changed deps": {"components/contracts/signatures.py": "modified"}} in status("train")["train"]
    assert status("download") == {}  # download does not run the serving contract


def test_editing_a_command_no_stage_runs_changes_no_stage(trained_repo):
    rollback = trained_repo / "src/petseg/cli/rollback.py"
    rollback.write_text(rollback.read_text() + "\n# edited\n")
    proc = _run([*DVC, "status", "--json"], trained_repo)
    assert json.loads(proc.stdout) == {}, proc.stdout


def test_plots_put_train_and_validation_on_shared_axes(trained_repo):
    shown = json.loads(_run([*DVC, "plots", "show", "--json"], trained_repo).stdout)["data"]
    for name in ("loss", "mean_iou", "accuracy"):
        (plot,) = shown[name]
        series = {point["filename::field"] for point in plot["content"]["data"]["values"]}
        assert series == {"train.tsv::train", "val.tsv::val"}, (name, series)
    (per_class,) = shown["iou_per_class"]
    fields = {point["filename::field"].split("::")[1] for point in per_class["content"]["data"]["values"]}
    assert fields == {"pet", "background", "border"}
    assert not any(name.startswith("dvclive/plots") for name in shown)  # no one-metric charts besides


def test_model_is_a_registry_artifact(trained_repo):
    listed = yaml.safe_load((trained_repo / "dvc.yaml").read_text())["artifacts"]
    assert listed["petseg-unet"]["type"] == "model" and listed["petseg-unet"]["path"] == "models/savedmodel"
    # The registry flow: push the model to a remote, register a version (a GTO git tag), and DVC
    # resolves the artifact's latest version to the SavedModel train wrote.
    _run([*DVC, "remote", "add", "-d", "store", str(trained_repo.parent / "remote")], trained_repo)
    _commit(trained_repo, "a remote")
    _run([*DVC, "push", "train"], trained_repo)
    _run(["git", "tag", "-a", "petseg-unet@v1.0.0", "-m", "register petseg-unet"], trained_repo)
    out = trained_repo.parent / "fetched"
    _run([*DVC, "artifacts", "get", str(trained_repo), "petseg-unet", "-o", str(out)], trained_repo)
    assert (out / "saved_model.pb").is_file()

    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    assert files(out) == files(trained_repo / "models/savedmodel")


def test_queued_two_point_sweep_runs_and_compares(trained_repo):
    queued = _run([*DVC, "exp", "run", "--queue", "-S", "train.learning_rate=0.02,0.005"], trained_repo)
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    _run([*DVC, "queue", "start"], trained_repo)
    deadline = time.monotonic() + 900
    try:
        while True:
            status = _run([*DVC, "queue", "status"], trained_repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(5)
    finally:
        subprocess.run([*DVC, "queue", "stop"], cwd=trained_repo, capture_output=True, timeout=120)
    assert status.count("Success") == 2, status  # `dvc queue logs <task>` says why one failed

    rows = _experiments(trained_repo)
    assert sorted(row["train.learning_rate"] for row in rows) == ["0.005", "0.02"]
    for row in rows:  # training and evaluation metrics side by side
        assert row["epochs_run"] == "2" and 0.0 <= float(row["best_val.mean_iou"]) <= 1.0
        assert 0.0 <= float(row["mean_iou"]) <= 1.0
    best = max(rows, key=lambda row: float(row["best_val.mean_iou"]))
    _run([*DVC, "exp", "apply", best["Experiment"]], trained_repo)
    applied = yaml.safe_load((trained_repo / "params.yaml").read_text())["train"]["learning_rate"]
    assert str(applied) == best["train.learning_rate"]
    assert json.loads((trained_repo / "models/metrics.json").read_text())["best_val"]["mean_iou"] == pytest.approx(
        float(best["best_val.mean_iou"])
    )  # its outputs came with it


def test_push_keeps_the_validation_report_and_the_next_validate_compares_with_it(tmp_path):
    """dvc repro pushes version 1 with its data's report; validate then checks data against that report."""
    gate = {"evaluate": {"min_mean_iou": 0.0, "min_accuracy": 0.0}, "push": {"warmup_requests": 1}}
    repo = _make_repo(tmp_path / "repo", tiny_params_dict({**TINY_TRAINING, **gate}))
    first = _run([*DVC, "repro"], repo)
    assert "validate: no version served at serving/models/petseg yet: no drift check" in first.stdout
    kept = repo / "serving/models/petseg/1/drift_reference"
    for name in ("summary.json", "examples.csv"):
        assert (kept / name).read_bytes() == (repo / "reports/validation" / name).read_bytes()
    # dvc repro leaves the model card beside the version and, as push's output, in reports/model_card
    card_dir = repo / "serving/models/petseg/1/model_card"
    for name in ("model_card.html", "model_card.md", "model_card.json"):
        assert (card_dir / name).read_bytes() == (repo / "reports/model_card" / name).read_bytes()
    card = json.loads((card_dir / "model_card.json").read_text())
    assert card["missing"] == [] and card["model"]["version"] == 1
    assert (
        card["evaluation"]["mean_iou"] == json.loads((repo / "reports/evaluate/metrics.json").read_text())["mean_iou"]
    )
    assert card["training"]["epochs_run"] == json.loads((repo / "models/metrics.json").read_text())["epochs_run"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert "reports/model_card" in [out["path"] for out in lock["stages"]["push"]["outs"]]  # cached by DVC

    again = _run([*DVC, "repro", "-f", "-s", "validate"], repo)
    assert "the data served version 1 was trained on (serving/models/petseg/1/drift_reference)" in again.stdout
    assert json.loads((repo / "reports/validation/summary.json").read_text())["drift_reference"]["dir"] == (
        "serving/models/petseg/1/drift_reference"
    )

    # Darker photos arrive (a new camera, say): validate stops the pipeline on the served model's data.
    for photo in (repo / "data/raw").rglob("*.jpg"):
        with Image.open(photo) as image:
            darker = image.point(lambda v: v // 2)
        darker.save(photo, format="JPEG", quality=95)
    drifted = _run([*DVC, "repro", "-s", "validate"], repo, check=False)
    assert drifted.returncode != 0
    assert "petseg validate: error: " in drifted.stderr and "no_drift_brightness (" in drifted.stderr

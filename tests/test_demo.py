"""End to end as a new user meets it: the README's demo command, then a DVC remote round trip.

Runs the real scripts/demo.sh (with a tiny synthetic set and model) in a throwaway
git clone of this project: the whole DVC pipeline as an experiment, the local gRPC
server, the client and its prediction sheet. Then `dvc push`, a fresh clone,
`dvc pull`, and `dvc status` / `dvc repro` with nothing left to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

TINY_DEMO = " ".join(
    f"-S {kv}"
    for kv in [
        "data.synthetic.train_examples=24",
        "data.synthetic.test_examples=8",
        "data.synthetic.min_side=96",
        "data.synthetic.max_side=160",
        "validate.min_train_examples=10",
        "validate.min_test_examples=4",
        "preprocess.image_size=64",
        "preprocess.examples_per_shard=8",
        "model.architecture=unet",
        "model.unet.base_filters=4",
        "model.unet.depth=2",
        "train.epochs=1",
        "train.batch_size=8",
        "evaluate.min_mean_iou=0",
        "evaluate.min_accuracy=0",
        "evaluate.sample_predictions=2",
    ]
)


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PETSEG_NO_SETUP="1",
        PETSEG_DEMO_EXTRA=TINY_DEMO,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture
def project_clone(tmp_path) -> Path:
    """This project's tracked files, committed in a fresh git repository."""
    repo = tmp_path / "petseg"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    for name in filter(None, tracked.stdout.decode().split("\0")):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, repo / name)
    _run(["git", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "petseg"], repo)
    return repo


def test_demo_runs_the_pipeline_serves_and_predicts_then_dvc_pull_restores_it(project_clone, tmp_path):
    repo = project_clone
    demo = _run(["bash", "scripts/demo.sh"], repo)
    assert "demo: done" in demo.stdout

    blessing = json.loads((repo / "reports/evaluate/blessing.json").read_text())
    assert blessing["blessed"] is True
    assert (repo / "serving/models/petseg/1/saved_model.pb").is_file()
    # the model card: beside the version, and push's DVC output; the demo prints where it is
    for name in ("model_card.html", "model_card.md", "model_card.json"):
        assert (repo / "serving/models/petseg/1/model_card" / name).read_bytes() == (
            repo / "reports/model_card" / name
        ).read_bytes()
    assert "serving/models/petseg/1/model_card/model_card.html" in demo.stdout
    card = json.loads((repo / "reports/model_card/model_card.json").read_text())
    assert (
        card["evaluation"]["mean_iou"] == json.loads((repo / "reports/evaluate/metrics.json").read_text())["mean_iou"]
    )
    masks = sorted((repo / "reports/demo/predictions").glob("*.mask.png"))
    assert len(masks) == 4 and len(list((repo / "reports/demo/predictions").glob("*.overlay.png"))) == 4
    assert (repo / "reports/demo/prediction_sheet.png").stat().st_size > 0
    assert demo.stdout.count("[version 1]") == 4  # one line per image, answered over gRPC by version 1
    assert "mean_iou" in demo.stdout  # dvc metrics show
    assert "BLESSED: " in demo.stdout and "NOT BLESSED" not in demo.stdout

    dag = _run([sys.executable, "-m", "dvc", "dag"], repo).stdout
    for stage in ("download", "validate", "preprocess", "train", "evaluate", "push"):
        assert stage in dag

    # Share the run: the default remote is a local folder; point it at a temporary one.
    store = tmp_path / "dvc-store"
    _run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(store)], repo)
    _run([sys.executable, "-m", "dvc", "push"], repo)
    _run(["git", "add", "dvc.lock", "params.yaml"], repo)
    _run(["git", "commit", "-qm", "demo run"], repo)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    _run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(store)], clone)
    _run([sys.executable, "-m", "dvc", "pull"], clone)
    assert (clone / "models/savedmodel/saved_model.pb").is_file()
    assert (clone / "data/records/manifest.json").is_file()
    status = _run([sys.executable, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status, status
    repro = _run([sys.executable, "-m", "dvc", "repro"], clone).stdout
    assert "Running stage" not in repro, repro

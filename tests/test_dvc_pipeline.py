"""End to end: `dvc repro` on a tiny synthetic set in a temporary git + DVC repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, tiny_params_dict

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "validate", "preprocess"]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A throwaway git + DVC repo holding this project's pipeline, code and tiny params."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    for folder in ("components", "src", "pipeline", "serving"):
        shutil.copytree(REPO_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "models"))
    (repo / "data/archives").mkdir(parents=True)  # the download stage's source dependency
    shutil.copy(REPO_ROOT / "data/archives/README.md", repo / "data/archives/README.md")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    return repo


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

"""End to end: the archives source is a DVC dependency, so a changed source trimap re-runs download.

A real `dvc repro` in a throwaway git + DVC repo (the `dvc_repo` fixture of test_dvc_pipeline),
with the 26 real Oxford-IIIT Pet samples copied into data/archives as extracted folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_dvc_pipeline import _ran_stages, _run, dvc_repo  # noqa: F401 - dvc_repo is a fixture

pytestmark = pytest.mark.slow

STAGES = ["download", "validate"]


def _repro(repo: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *STAGES], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )


def test_a_changed_source_trimap_reruns_download_and_stops_at_validation(dvc_repo, sample_dir):  # noqa: F811
    archives = dvc_repo / "data" / "archives"
    for folder in ("images", "annotations"):
        shutil.copytree(sample_dir / folder, archives / folder)
    for path in archives.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared sample is read-only
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["data"]["source"] = "archives"
    params["data"]["archives"]["path"] = "data/archives"
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))

    first = _run([sys.executable, "-m", "dvc", "repro", *STAGES], dvc_repo)
    assert _ran_stages(first.stdout) == set(STAGES)
    record = yaml.safe_load((dvc_repo / "data/raw/download.json").read_text())
    assert record["counts"] == {"trainval": 18, "test": 8}
    assert len(record["source_files"]) == 26 * 2 + 3  # images, trimaps, three list files

    second = _run([sys.executable, "-m", "dvc", "repro", *STAGES], dvc_repo)
    assert _ran_stages(second.stdout) == set(), second.stdout

    trimap_path = archives / "annotations" / "trimaps" / "Bengal_185.png"
    with Image.open(trimap_path) as im:
        trimap = np.array(im)
    trimap[:4, :4] = 7  # not a trimap value
    Image.fromarray(trimap).save(trimap_path)

    third = _repro(dvc_repo)
    output = third.stdout + third.stderr
    assert third.returncode != 0, output
    assert "Running stage 'download'" in third.stdout, output
    assert "mask_values_in_trimap_set (1 example: Bengal_185)" in output, output
    changed = yaml.safe_load((dvc_repo / "data/raw/download.json").read_text())
    key = "annotations/trimaps/Bengal_185.png"
    assert changed["source_files"][key] != record["source_files"][key]

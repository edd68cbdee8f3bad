"""End to end: the archives source is a DVC dependency, so a changed source trimap re-runs download.

A real `dvc repro` in a throwaway git + DVC repo (the `dvc_repo` fixture of test_dvc_pipeline),
with the 26 real Oxford-IIIT Pet samples copied into data/archives as extracted folders.
"""

from __future__ import annotations

import json
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


def _status(repo: Path) -> dict:
    """`dvc status --json` of the download stage: {} when it is up to date."""
    return json.loads(_run([sys.executable, "-m", "dvc", "status", "download", "--json"], repo).stdout or "{}")


def _write_archives(folder: Path, examples: int = 6) -> None:
    """A small extracted archives folder in the official layout: synthetic scenes, list files, trimaps."""
    from petseg.components.contracts.rawdata import BREEDS, species_of_breed
    from petseg.components.sources.annotations import breed_rank
    from petseg.components.sources.synthetic import synthetic_scene

    (folder / "images").mkdir(parents=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    for i in range(examples):
        class_id = 1 + i % 2  # Abyssinian (a cat), american_bulldog (a dog)
        species = species_of_breed(BREEDS[class_id - 1])
        image, trimap = synthetic_scene(rng, 64, 96, species=species)
        example_id = f"{BREEDS[class_id - 1]}_{i + 1}"
        Image.fromarray(image).save(folder / "images" / f"{example_id}.jpg")
        Image.fromarray(trimap).save(folder / "annotations" / "trimaps" / f"{example_id}.png")
        code = 1 if species == "cat" else 2
        lists["test" if i >= examples - 2 else "trainval"].append(
            f"{example_id} {class_id} {code} {breed_rank(class_id)}"
        )
    for split, lines in lists.items():
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _use_archives_at(repo: Path, folder: Path, path_in_params: str) -> None:
    """Write archives into `folder` and point data.archives.path at it (`path_in_params`)."""
    _write_archives(folder)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = "archives"
    params["data"]["archives"]["path"] = path_in_params
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_changed_file_under_a_configured_archives_path_reruns_download(dvc_repo, tmp_path, where):  # noqa: F811
    """dvc.yaml's download dep is ${data.archives.path}: DVC watches the folder params.yaml names.

    Inside the repository (a folder other than data/archives) and outside it (a relative
    path that leaves the repository, which DVC tracks as an external dependency).
    """
    if where == "inside":
        folder, configured = dvc_repo / "inputs" / "pets", "inputs/pets"
    else:
        folder, configured = tmp_path / "outside" / "pets", "../outside/pets"
    _use_archives_at(dvc_repo, folder, configured)

    first = _run([sys.executable, "-m", "dvc", "repro", "download"], dvc_repo)
    assert "Running stage 'download'" in first.stdout
    record = yaml.safe_load((dvc_repo / "data/raw/download.json").read_text())
    assert record["counts"] == {"trainval": 4, "test": 2}
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    watched = {dep["path"] for dep in lock["stages"]["download"]["deps"] if not dep["path"].endswith(".py")}
    assert watched == {configured}
    assert _status(dvc_repo) == {}

    (dvc_repo / "data" / "archives" / "README.md").write_text("edited\n")  # the old fixed folder: not watched now
    assert _status(dvc_repo) == {}

    trimap_path = folder / "annotations" / "trimaps" / "Abyssinian_1.png"
    with Image.open(trimap_path) as im:
        trimap = np.array(im)
    trimap[:4, :4] = 2 if trimap[0, 0] != 2 else 1  # another valid trimap value
    Image.fromarray(trimap).save(trimap_path)
    changed = _status(dvc_repo)["download"]
    shown = configured if where == "inside" else str(folder)  # DVC shows an external dependency's absolute path
    assert {"changed deps": {shown: "modified"}} in changed, changed

    again = _run([sys.executable, "-m", "dvc", "repro", "download"], dvc_repo)
    assert "Running stage 'download'" in again.stdout, again.stdout
    key = "annotations/trimaps/Abyssinian_1.png"
    assert (
        yaml.safe_load((dvc_repo / "data/raw/download.json").read_text())["source_files"][key]
        != (record["source_files"][key])
    )
    assert _status(dvc_repo) == {}

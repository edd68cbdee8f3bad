"""The top-level folders ship inside the one `petseg` package, not as import names of their own."""

import subprocess
import sys
import zipfile

import pytest
from helpers import REPO_ROOT

import petseg.components
import petseg.pipeline
import petseg.serving


def test_installed_package_maps_the_top_level_folders():
    assert petseg.components.__path__[0].endswith("components")
    assert {p.__name__ for p in (petseg.components, petseg.pipeline, petseg.serving)} == {
        "petseg.components",
        "petseg.pipeline",
        "petseg.serving",
    }


@pytest.mark.slow
def test_wheel_contains_only_the_petseg_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("petseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names}
    assert all(t == "petseg" or t.endswith(".dist-info") for t in top_level), top_level
    assert "petseg/py.typed" in names
    # the model card's templates are package data (components/card/render.py loads them from the package)
    for template in (REPO_ROOT / "components" / "card" / "templates").glob("*.j2"):
        assert f"petseg/components/card/templates/{template.name}" in names, template
    for folder, inside in (
        ("components", "components/"),
        ("pipeline", "pipeline/"),
        ("serving", "serving/"),
        ("src/petseg", ""),
    ):
        for source in (REPO_ROOT / folder).rglob("*.py"):  # every subpackage is listed in pyproject.toml
            assert f"petseg/{inside}{source.relative_to(REPO_ROOT / folder).as_posix()}" in names, source
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "petseg = petseg.cli.main:main" in entry_points  # pyproject [project.scripts]

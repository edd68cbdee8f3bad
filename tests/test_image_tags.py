"""Derived image tags change with every change an image would copy, untracked files included (pipeline/images.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from petseg.pipeline.images import Tag, code_tag, copy_sources, untracked_image_files

REPO_ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.email=t@petseg.invalid", "-c", "user.name=t"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout with the project's Dockerfiles, .dockerignore files and .gitignore, and a few sources."""
    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    for name in ("Dockerfile", "Dockerfile.gpu", "Dockerfile.dockerignore", "Dockerfile.gpu.dockerignore"):
        shutil.copy(REPO_ROOT / "pipeline" / name, repo / "pipeline" / name)
    shutil.copy(REPO_ROOT / ".gitignore", repo / ".gitignore")
    for name in ("pyproject.toml", "README.md", "src/petseg/__init__.py", "components/download.py", "tests/t.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"# {name}\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "sources")
    return repo


def test_the_project_dockerfiles_copy_the_package_folders():
    for name in ("Dockerfile", "Dockerfile.gpu"):
        sources = copy_sources((REPO_ROOT / "pipeline" / name).read_text())
        assert sources == ["pyproject.toml", "README.md", "src", "components", "pipeline", "serving"], name


def test_copy_sources_reads_continuations_flags_json_form_and_skips_other_stages():
    text = (
        'FROM x AS build\nCOPY --chown=1:1 a b \\\n  ./c/ /dst/\nADD ["d e", "/dst"]\n'
        "COPY --from=build /opt /opt\ncopy f /f\nRUN cp a b\n"
    )
    assert copy_sources(text) == ["a", "b", "c/", "d e", "f"]


def test_a_clean_checkout_has_a_cacheable_commit_tag(checkout):
    commit = _git(checkout, "rev-parse", "HEAD")
    assert code_tag(checkout) == Tag(f"0.1.0-g{commit[:12]}", commit, True)


def test_an_untracked_file_an_image_copies_changes_the_tag_and_so_does_each_edit(checkout):
    clean = code_tag(checkout)
    new_module = checkout / "components" / "new_step.py"
    new_module.write_text("X = 1\n")
    assert untracked_image_files(checkout) == ["components/new_step.py"]
    added = code_tag(checkout)
    assert added.value.startswith(clean.value + "-dirty-") and not added.cacheable
    new_module.write_text("X = 2\n")
    edited = code_tag(checkout)
    assert edited.value.startswith(clean.value + "-dirty-") and edited != added
    new_module.write_text("X = 1\n")
    assert code_tag(checkout) == added  # the tag names the content: the same files give the same tag
    new_module.unlink()
    assert code_tag(checkout) == clean


@pytest.mark.parametrize(
    "name",
    [
        "tests/new_test.py",  # no Dockerfile copies tests/
        "docs/notes.md",
        "components/__pycache__/download.cpython-311.pyc",  # .dockerignore: **/__pycache__ (and .gitignore)
        "serving/models/petseg/1/saved_model.pb",  # .gitignore and .dockerignore: serving/models/
        "src/petseg.egg-info/PKG-INFO",  # .gitignore: *.egg-info/
    ],
)
def test_files_no_image_copies_leave_the_tag_alone(checkout, name):
    clean = code_tag(checkout)
    (checkout / name).parent.mkdir(parents=True, exist_ok=True)
    (checkout / name).write_text("anything\n")
    assert untracked_image_files(checkout) == []
    assert code_tag(checkout) == clean


def test_a_file_only_the_dockerignore_excludes_is_not_counted(checkout):
    ignore = checkout / "pipeline" / "Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text() + "components/scratch/\n")
    gpu_ignore = checkout / "pipeline" / "Dockerfile.gpu.dockerignore"
    gpu_ignore.write_text(gpu_ignore.read_text() + "components/scratch/\n")
    _git(checkout, "commit", "-qam", "ignore scratch")
    clean = code_tag(checkout)
    (checkout / "components" / "scratch").mkdir()
    (checkout / "components" / "scratch" / "notes.py").write_text("x\n")
    assert code_tag(checkout) == clean
    (checkout / "components" / "kept.py").write_text("x\n")  # the same folder, not excluded
    assert code_tag(checkout) != clean


def test_a_file_one_image_copies_counts_even_if_the_other_excludes_it(checkout):
    gpu_ignore = checkout / "pipeline" / "Dockerfile.gpu.dockerignore"
    gpu_ignore.write_text(gpu_ignore.read_text() + "components/cpu_only.py\n")
    _git(checkout, "commit", "-qam", "gpu image leaves a file out")
    (checkout / "components" / "cpu_only.py").write_text("x\n")
    assert untracked_image_files(checkout) == ["components/cpu_only.py"]


def test_tracked_edits_give_distinct_dirty_tags(checkout):
    clean = code_tag(checkout)
    module = checkout / "components" / "download.py"
    module.write_text("# one\n")
    one = code_tag(checkout)
    module.write_text("# two\n")
    two = code_tag(checkout)
    assert clean.value != one.value != two.value and one.value.startswith(clean.value + "-dirty-")
    assert not one.cacheable and not two.cacheable

"""The linter and the type checker run clean: ruff (lint and format) and mypy, configured in pyproject.toml.

mypy cannot see setuptools' package-dir mapping (petseg.components -> components/),
so it checks a tree of links laid out the way the installed package is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

PACKAGE_FOLDERS = ("components", "pipeline", "serving")


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_ruff_finds_nothing():
    proc = _run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    proc = _run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def package_tree(root: Path) -> Path:
    """`root/petseg/`: links to src/petseg's files and to the three folders the package maps in."""
    package = root / "petseg"
    package.mkdir(parents=True)
    for source in (REPO_ROOT / "src" / "petseg").glob("*.py"):
        (package / source.name).symlink_to(source)
    for folder in PACKAGE_FOLDERS:
        (package / folder).symlink_to(REPO_ROOT / folder, target_is_directory=True)
    return root


@pytest.mark.slow
def test_mypy_finds_nothing(tmp_path):
    tree = package_tree(tmp_path / "tree")
    env = {**os.environ, "MYPYPATH": str(tree)}
    proc = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO_ROOT / "pyproject.toml"),
            "--cache-dir",
            str(REPO_ROOT / ".mypy_cache"),
            "-p",
            "petseg",
        ],
        tmp_path,
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""The linters, the type checker and the floor plan run clean, configured in pyproject.toml.

scripts/setup.sh installs petseg in setuptools' strict editable mode: a tree of links
(build/__editable__.*) that static tools read like any installed package, so mypy,
pyright and import-linter resolve `petseg.*` from a plain checkout with no extra set-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

CODE_FOLDERS = ("components", "pipeline", "serving", "src")
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    proc = _run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    proc = _run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts_hold():
    """The layers, independent steps and forbidden imports of [tool.importlinter] (pyproject.toml)."""
    proc = _run([str(BIN / "lint-imports"), "--no-cache", str(REPO_ROOT / "pyproject.toml")], REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_every_module_of_the_package_is_in_the_import_graph():
    """grimp (import-linter's engine) finds each petseg source file: none is hidden behind an import hook."""
    import grimp

    graph = grimp.build_graph("petseg", cache_dir=None)
    roots = {"components": "petseg.components", "pipeline": "petseg.pipeline", "serving": "petseg.serving", "src": ""}
    files = [(path, prefix) for folder, prefix in roots.items() for path in (REPO_ROOT / folder).rglob("*.py")]
    for path, prefix in files:
        base = REPO_ROOT / "src" if not prefix else REPO_ROOT / path.relative_to(REPO_ROOT).parts[0]
        parts = path.relative_to(base).with_suffix("").parts
        name = ".".join(p for p in (prefix, *parts) if p).removesuffix(".__init__")
        assert name in graph.modules, f"{path} is missing from the import graph"
    assert len(files) > 70


@pytest.mark.slow
def test_mypy_finds_nothing(tmp_path):
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
        tmp_path,  # not the checkout: mypy finds petseg where an editor does, in the environment
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_pyright_resolves_every_petseg_import():
    """What VS Code's Pylance sees: no `petseg` import left unresolved in the package's folders."""
    proc = _run([str(BIN / "pyright"), "--outputjson", *CODE_FOLDERS], REPO_ROOT)
    report = json.loads(proc.stdout)
    assert report["summary"]["filesAnalyzed"] > 50
    unresolved = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d.get("rule") in ("reportMissingImports", "reportMissingModuleSource", "reportAttributeAccessIssue")
        and "petseg" in d["message"]
    ]
    assert unresolved == []

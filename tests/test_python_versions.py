"""Python 3.11-3.13: pyproject, setup.sh and CI agree, and setup refuses anything else in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest
from helpers import REPO_ROOT
from packaging.specifiers import SpecifierSet

SUPPORTED = ["3.11", "3.12", "3.13"]


def _setup_supported() -> list[str]:
    match = re.search(r'^SUPPORTED="([^"]+)"', (REPO_ROOT / "scripts/setup.sh").read_text(), re.M)
    assert match, "scripts/setup.sh has no SUPPORTED= line"
    return match.group(1).split()


def test_requires_python_and_setup_agree_on_3_11_to_3_13():
    spec = SpecifierSet(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert [v for v in ["3.10", *SUPPORTED, "3.14"] if f"{v}.0" in spec] == SUPPORTED
    assert _setup_supported() == SUPPORTED


def test_ci_runs_the_full_suite_and_the_3_13_check():
    ci = (REPO_ROOT / ".ci/run").read_text()
    assert "bash scripts/setup.sh" in ci and "python -m pytest" in ci
    assert "bash .ci/python3.13 install" in ci and "bash .ci/python3.13 check" in ci
    check = (REPO_ROOT / ".ci/python3.13").read_text()
    assert '-m "not slow"' in check and 'petseg" download' in check and 'petseg" validate' in check


def _setup(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/setup.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VENV": str(tmp_path / "venv"), **env},
    )


@pytest.mark.parametrize("python", ["no-such-python", "python3.10"])
def test_setup_refuses_an_unsupported_interpreter_in_one_line(tmp_path, python):
    if python == "python3.10" and shutil.which("python3.10") is None:
        fake = tmp_path / "bin" / "python3.10"  # an interpreter that says it is 3.10
        fake.parent.mkdir()
        fake.write_text("#!/bin/sh\necho 3.10\n")
        fake.chmod(0o755)
        python = str(fake)
    proc = _setup(tmp_path, PYTHON=python)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "petseg needs Python 3.11, 3.12, 3.13" in proc.stderr
    assert not (tmp_path / "venv").exists()  # nothing half-made


def test_setup_refuses_an_existing_venv_of_another_python(tmp_path):
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("#!/bin/sh\necho 3.9\n")
    venv_python.chmod(0o755)
    proc = _setup(tmp_path)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"setup: {tmp_path / 'venv'} has Python 3.9; remove {tmp_path / 'venv'} "
        f"(rm -rf {tmp_path / 'venv'}) and run setup again"
    )
    assert venv_python.read_text() == "#!/bin/sh\necho 3.9\n"  # left as the user had it

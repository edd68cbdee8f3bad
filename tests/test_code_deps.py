"""Each dvc.yaml stage depends on every petseg file its command runs (components/core/codedeps.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from helpers import REPO_ROOT

from petseg.cli.main import COMMANDS, command_module
from petseg.components.core.codedeps import code_fingerprint, import_closure

SYNC = REPO_ROOT / "scripts" / "sync_dvc_deps.py"


def test_dvc_yaml_lists_every_file_each_stage_runs():
    proc = subprocess.run([sys.executable, str(SYNC), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        "dvc.yaml's code deps differ from the import closures; run `python scripts/sync_dvc_deps.py`:\n"
        + proc.stdout
        + proc.stderr
    )


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `fakepkg`: a step importing at module level, lazily, relatively, and a third-party module."""
    root = tmp_path / "fakepkg"
    files = {
        "__init__.py": "",
        "sub/__init__.py": "from . import shared\n",
        "sub/shared.py": "import json\n",
        "contract.py": "SIGNATURE = 'serving_default'\n",
        "lazy.py": "X = 1\n",
        "unused.py": "import fakepkg.step\n",
        "step.py": textwrap.dedent("""\
            import os
            from fakepkg import contract
            from .sub.shared import *

            def run():
                from fakepkg.lazy import X
                import numpy
                return X
            """),
        "cli.py": textwrap.dedent("""\
            from fakepkg.contract import SIGNATURE

            def main():
                from fakepkg import step
            """),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]


def test_closure_follows_module_level_lazy_and_relative_imports_only_inside_the_package(fake_package):
    closure = import_closure("fakepkg.step")
    assert set(closure) == {
        "fakepkg",
        "fakepkg.step",
        "fakepkg.contract",
        "fakepkg.lazy",
        "fakepkg.sub",
        "fakepkg.sub.shared",
    }
    assert closure["fakepkg.contract"] == fake_package / "contract.py"


def test_top_level_only_leaves_out_what_functions_import(fake_package):
    assert set(import_closure("fakepkg.cli", top_level_only=True)) == {"fakepkg", "fakepkg.cli", "fakepkg.contract"}
    assert "fakepkg.step" in import_closure("fakepkg.cli")


def test_an_unknown_module_is_an_error(fake_package):
    with pytest.raises(ValueError, match=r"fakepkg\.nothing: no such module"):
        import_closure("fakepkg.nothing")


def test_fingerprint_changes_with_any_file_of_the_closure_and_only_those(fake_package):
    before = code_fingerprint("fakepkg.step")
    (fake_package / "unused.py").write_text("# edited\n")
    assert code_fingerprint("fakepkg.step") == before
    (fake_package / "contract.py").write_text("SIGNATURE = 'other'\n")
    assert code_fingerprint("fakepkg.step") != before


def _command_files(command: str) -> set[str]:
    return {
        path.resolve().relative_to(REPO_ROOT).as_posix() for path in import_closure(command_module(command)).values()
    }


def test_train_runs_the_serving_contract_its_own_command_module_and_no_other():
    files = _command_files("train")
    assert {
        "components/train.py",
        "components/contracts/signatures.py",
        "components/core/params.py",
        "components/core/fsutil.py",
        "src/petseg/cli/main.py",
        "src/petseg/cli/train.py",
    } <= files
    assert "components/evaluate.py" not in files  # another step's module is not train's code
    assert not {f for f in files if f.startswith("src/petseg/cli/")} - {
        "src/petseg/cli/__init__.py",
        "src/petseg/cli/main.py",
        "src/petseg/cli/train.py",
    }


# What a DVC stage must never depend on: Kubeflow, KServe, the model server and its client.
CLUSTER_IMPORTS = re.compile(
    r"^\s*(?:import|from)\s+(?:kfp|kubernetes|petseg\.pipeline|petseg\.components\.deploy"
    r"|petseg\.serving\.(?:server|rest|servicer|client|predict_files))\b",
    re.M,
)


def test_no_stage_depends_on_cluster_or_server_code():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for dep in stage["deps"]:
            if dep.endswith(".py"):
                found = CLUSTER_IMPORTS.search((REPO_ROOT / dep).read_text())
                assert found is None, f"stage {name} depends on {dep}, which imports {found.group(0).strip()}"
    assert set(stages) <= set(COMMANDS)


def test_the_cluster_import_check_catches_a_kubeflow_import():
    assert CLUSTER_IMPORTS.search("def f():\n    from petseg.pipeline.run import submit\n")
    assert CLUSTER_IMPORTS.search("import kfp\n")
    assert CLUSTER_IMPORTS.search("from petseg.serving.server import serve\n")
    assert not CLUSTER_IMPORTS.search("from petseg.serving.image_header import size\n")


def test_sync_script_reports_and_restores_a_missing_dep(tmp_path):
    dvc_yaml = tmp_path / "dvc.yaml"
    shutil.copy(REPO_ROOT / "dvc.yaml", dvc_yaml)
    text = dvc_yaml.read_text()
    assert "      - components/contracts/signatures.py\n" in text
    text = text.replace("      - components/contracts/signatures.py\n", "", 1)
    dvc_yaml.write_text(
        text.replace("      - components/train.py\n", "      - components/train.py\n      - components/gone.py\n", 1)
    )

    check = subprocess.run(
        [sys.executable, str(SYNC), "--check", "--dvc-yaml", str(dvc_yaml)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 1
    assert "missing code deps components/contracts/signatures.py" in check.stdout
    assert "stage train: deps it does not import components/gone.py" in check.stdout
    assert "run `python scripts/sync_dvc_deps.py`" in check.stderr

    fix = subprocess.run(
        [sys.executable, str(SYNC), "--dvc-yaml", str(dvc_yaml)], capture_output=True, text=True, timeout=120
    )
    assert fix.returncode == 0, fix.stderr
    assert dvc_yaml.read_text() == (REPO_ROOT / "dvc.yaml").read_text()  # comments and order kept

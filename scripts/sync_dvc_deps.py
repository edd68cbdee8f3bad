"""Rewrite the code deps of each dvc.yaml stage as the import closure of the command it runs.

    python scripts/sync_dvc_deps.py           # rewrite dvc.yaml (comments and other deps kept)
    python scripts/sync_dvc_deps.py --check   # exit 1 and list the differences, change nothing

A stage whose cmd is `petseg <command> ...` runs the CLI module of that command
(petseg.cli.main.command_module: src/petseg/cli/<module>.py, with src/petseg/cli/main.py)
and so every petseg module those import (components/core/codedeps.py). Its deps keep what is not petseg
source (data, reports) in their order, followed by those source files, sorted. Needs petseg
installed editable from this checkout (scripts/setup.sh does), so modules map to its files.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML

from petseg.cli.main import command_module
from petseg.components.core.codedeps import import_closure

REPO_ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = REPO_ROOT / "dvc.yaml"
SOURCE_DIRS = ("components/", "src/petseg/", "pipeline/", "serving/")  # petseg's package-dir folders


def is_source_dep(dep: str) -> bool:
    """True for a dep that is a petseg source file (what this script manages)."""
    return dep.endswith(".py") and dep.startswith(SOURCE_DIRS)


def step_of(cmd: str) -> str | None:
    """`petseg train --records ...` -> "train"; None for a stage that does not run a petseg step."""
    words = cmd.split()
    return words[1] if len(words) > 1 and words[0] == "petseg" else None


def expected_source_deps(step: str) -> list[str]:
    """The repository paths of every petseg file `petseg <step>` runs, sorted."""
    paths = []
    for module, path in import_closure(command_module(step)).items():
        try:
            paths.append(path.resolve().relative_to(REPO_ROOT).as_posix())
        except ValueError:
            raise SystemExit(
                f"sync_dvc_deps: {module} is imported from {path}, not from {REPO_ROOT}; "
                f"install this checkout editable (bash scripts/setup.sh)"
            ) from None
    return sorted(paths)


def differences(stages: dict) -> dict[str, tuple[list[str], list[str]]]:
    """{stage: (missing source deps, stale source deps)} for each stage whose code deps are not its closure."""
    out = {}
    for name, stage in stages.items():
        step = step_of(str(stage.get("cmd", "")))
        if step is None:
            continue
        listed = {str(d) for d in stage.get("deps", []) if is_source_dep(str(d))}
        expected = set(expected_source_deps(step))
        if listed != expected:
            out[name] = (sorted(expected - listed), sorted(listed - expected))
    return out


def report(diff: dict[str, tuple[list[str], list[str]]]) -> str:
    lines = []
    for stage, (missing, stale) in diff.items():
        if missing:
            lines.append(f"stage {stage}: missing code deps {', '.join(missing)}")
        if stale:
            lines.append(f"stage {stage}: deps it does not import {', '.join(stale)}")
    return "\n".join(lines)


def sync(document) -> None:
    """Rewrite each petseg stage's deps in place: non-source deps first (kept), then its source closure."""
    for stage in document["stages"].values():
        step = step_of(str(stage.get("cmd", "")))
        if step is None:
            continue
        deps = stage.get("deps")
        kept = [d for d in (deps or []) if not is_source_dep(str(d))]
        new = kept + expected_source_deps(step)
        if deps is None:
            stage["deps"] = new
            continue
        while len(deps):
            deps.pop()
        deps.extend(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list differences and exit 1, change nothing")
    parser.add_argument("--dvc-yaml", type=Path, default=DVC_YAML, help="the file to check (default: dvc.yaml)")
    args = parser.parse_args(argv)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long cmd
    yaml.indent(mapping=2, sequence=4, offset=2)
    document = yaml.load(args.dvc_yaml.read_text())
    diff = differences(document["stages"])
    if not diff:
        print("sync_dvc_deps: dvc.yaml code deps match the import closures")
        return 0
    print(report(diff))
    if args.check:
        print("sync_dvc_deps: run `python scripts/sync_dvc_deps.py` to fix dvc.yaml", file=sys.stderr)
        return 1
    sync(document)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    args.dvc_yaml.write_text(buffer.getvalue())
    print(f"sync_dvc_deps: rewrote {args.dvc_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

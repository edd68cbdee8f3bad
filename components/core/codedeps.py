"""Which of petseg's own source files a module runs: its import closure inside the package.

Shared by two users that must agree on what "the code" of a step is:

- train's run signature hashes the closure of `petseg.components.train`, so a
  checkpoint written by other code is not resumed;
- dvc.yaml lists the closure of each stage's command module (petseg.cli.<module>)
  as `deps` (tests/test_code_deps.py checks it, scripts/sync_dvc_deps.py rewrites
  it), so a change to any file a stage runs marks it changed, and no other.

The closure is read from the source (ast), not from `sys.modules`: every
`import petseg...` / `from petseg... import ...` counts, at module level or
inside a function (the CLI and the steps import heavy modules lazily), plus the
`__init__.py` of each package on the way. Third-party imports are not followed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

PACKAGE = "petseg"


def module_file(name: str) -> Path | None:
    """The source file of petseg module `name`, or None if there is no such module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()  # the checkout's file, not the editable install's link to it


def imported_modules(
    source: str, module: str, is_package: bool, top_level_only: bool = False, package: str = PACKAGE
) -> set[str]:
    """Names of the `package` modules that `source` (module `module`) imports; submodules named by `from` count."""
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    ours = {n for n in names if n == package or n.startswith(package + ".")}
    return {n for n in ours if module_file(n) is not None}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from ... import` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_parents(name: str) -> list[str]:
    """`petseg.components.train` -> [petseg, petseg.components, petseg.components.train]."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(module: str, top_level_only: bool = False) -> dict[str, Path]:
    """{module name: source file} for `module` and every module of its top package it imports, transitively.

    `top_level_only` follows only module-level imports (for the CLI, whose subcommands import
    their step lazily: one stage runs one subcommand, not all of them).
    """
    if module_file(module) is None:
        raise ValueError(f"{module}: no such module (its source file is not found)")
    package = module.split(".")[0]
    closure: dict[str, Path] = {}
    pending = _with_parents(module)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        path = module_file(name)
        if path is None:
            continue
        closure[name] = path
        found = imported_modules(path.read_text(), name, path.name == "__init__.py", top_level_only, package)
        for imported in found:
            pending.extend(_with_parents(imported))
    return dict(sorted(closure.items()))


def code_fingerprint(module: str) -> str:
    """sha256 over the names and contents of `module`'s import closure: changes when any of that code does."""
    digest = hashlib.sha256()
    for name, path in import_closure(module).items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()

"""Lineage: where a pushed model version came from (code, params, data), recorded with the version.

Both runners (the `petseg` CLI under DVC and the Kubeflow components) build the
record through collect_lineage, so `petseg rollback --list` reads the same
fields whoever pushed.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from petseg.components.params import Params, params_to_dict
from petseg.components.rawdata import sha256_file
from petseg.components.manifest import manifest_path


def collect_lineage(records_dir: Path | None, params: Params, repo_dir: Path | None = None) -> dict:
    """What a pushed version came from: git commit (if in a git checkout), data manifest hash, all params."""
    manifest = manifest_path(records_dir) if records_dir else None
    commit, dirty = _git_state(Path(repo_dir) if repo_dir else Path.cwd())
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "data_manifest_sha256": sha256_file(manifest) if manifest and manifest.is_file() else None,
        "params": params_to_dict(params),
    }


def _git_state(repo_dir: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None)



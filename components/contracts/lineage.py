"""Lineage: where a pushed model version came from (code, params, data, metrics, run), recorded with the version.

Both runners build the record through collect_lineage, so `petseg rollback
--list` reads the same fields whoever pushed:

- the `petseg` CLI (under DVC, or by hand) passes the records folder and the
  params it loaded; the code is the git checkout it runs from;
- the Kubeflow push component passes the blessing evaluate wrote (it holds the
  data manifest's hash; the records themselves are not downloaded into push's
  pod), every params section the run was given, the run's id and name, and the
  code: the commit the images were built from (their tags carry it; the image
  also has it as $PETSEG_GIT_COMMIT).

Record (lineage.json keys written here; push adds version, metrics, blessing...):

    runner                "cli" | "kubeflow"
    run_id, run_name      the pipeline run (Kubeflow) or a generated id (CLI)
    git_commit            the code's commit, null when unknown
    git_dirty             true when the checkout had uncommitted changes, null when unknown
    code_images           {role: image} the Kubeflow steps ran in ({} for the CLI)
    data_manifest_sha256  sha256 of the TFRecords manifest the model was trained and evaluated on
    validation_fingerprint  the raw-data fingerprint in the summary.json of the validation those records
                          came from (the manifest's raw_fingerprint): which accepted validation report
                          is this model's drift reference. null when the records folder is not at hand
                          (the Kubeflow push pod) or predates it
    params                every params.yaml section, as the run used them
    drift_reference       (added by push when given the validation report) {dir, source, fingerprint}:
                          where in the version folder that report's summary.json and examples.csv
                          are kept, the folder they came from, the fingerprint of the data they validated
    metrics               the candidate's test metrics from the blessing (when a blessing is given)
"""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

from petseg.components.contracts.blessing import read_blessing
from petseg.components.contracts.manifest import load_manifest, manifest_path
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.params import Params, params_to_dict

# Set in the project's images at build time (`--build-arg PETSEG_GIT_COMMIT=$(git rev-parse HEAD)`).
COMMIT_ENV = "PETSEG_GIT_COMMIT"


def collect_lineage(
    records_dir: Path | None,
    params: Params,
    repo_dir: Path | None = None,
    *,
    blessing_file: Path | None = None,
    runner: str = "cli",
    run_id: str | None = None,
    run_name: str | None = None,
    code_commit: str | None = None,
    code_images: dict | None = None,
) -> dict:
    """The lineage record of a model about to be pushed (see the module docstring for the keys).

    The commit is, in order: the git checkout at `repo_dir` (default: the
    working directory), $PETSEG_GIT_COMMIT (set in the images), `code_commit`.
    The data hash is the manifest's in `records_dir`, else the one the blessing recorded.
    """
    commit, dirty = git_state(Path(repo_dir) if repo_dir else Path.cwd())
    if commit is None:
        commit = os.environ.get(COMMIT_ENV) or code_commit or None
    blessing = read_blessing(blessing_file) if blessing_file else None
    return {
        "runner": runner,
        "run_id": run_id or f"{runner}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        "run_name": run_name,
        "git_commit": commit,
        "git_dirty": dirty,
        "code_images": dict(code_images or {}),
        "data_manifest_sha256": _manifest_hash(records_dir)
        or (blessing.data.get("manifest_sha256") if blessing else None),
        "validation_fingerprint": _validation_fingerprint(records_dir),
        "params": params_to_dict(params),
        **({"metrics": blessing.candidate} if blessing and blessing.candidate else {}),
    }


def _validation_fingerprint(records_dir: Path | None) -> str | None:
    """The fingerprint of the validated raw data the records came from (validate's summary, via the manifest)."""
    if records_dir is None or not manifest_path(records_dir).is_file():
        return None
    return load_manifest(records_dir).raw_fingerprint or None


def _manifest_hash(records_dir: Path | None) -> str | None:
    manifest = manifest_path(records_dir) if records_dir else None
    return sha256_file(manifest) if manifest and manifest.is_file() else None


def git_state(repo_dir: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, uncommitted changes to tracked files?) of the checkout at `repo_dir`; (None, None) outside git."""

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

"""Lineage: where a pushed model version came from (code, params, data, metrics, run), recorded with the version.

Two typed records, one file. `Lineage` is what collect_lineage gathers before a
push; `VersionRecord` is `<version>/lineage.json` as push writes it: the
lineage plus what push knows (version, model fingerprint, metrics, blessing,
data, drift reference, when, infra validation). Both runners build the lineage
through collect_lineage, so `petseg rollback --list` and the model card read
the same fields whoever pushed:

- the `petseg` CLI (under DVC, or by hand) passes the records folder and the
  params it loaded; the code is the git checkout it runs from;
- the Kubeflow push component passes the blessing evaluate wrote (it holds the
  data manifest's hash; the records themselves are not downloaded into push's
  pod), every params section the run was given, the run's id and name, and the
  code: the commit the images were built from (their tags carry it; the image
  also has it as $PETSEG_GIT_COMMIT), plus the URIs of the artifacts it read.

lineage.json is one flat JSON object (the format predates these classes and is
kept): the Lineage keys, then push's keys.

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
    params_sha256         sha256 of `params` as canonical JSON (sorted keys), to compare runs at a glance
    model_artifact, evaluation_artifact, validation_artifact
                          (Kubeflow only) the URIs of the artifacts push read
    --- added by push ---
    model_name, version, source_model, model_fingerprint
    metrics               the candidate's test metrics from the blessing
    blessing              {blessed, reason, checks, baseline, thresholds}
    data                  the blessing's data record (records, image_size, test_examples, manifest_sha256)
    drift_reference       (when push was given the validation report) {dir, source, fingerprint}:
                          where in the version folder that report's summary.json and examples.csv
                          are kept, the folder they came from, the fingerprint of the data they validated
    pushed_at             ISO 8601, UTC
    infra_validation      what the infra validation of the staged copy reported

Reading is tolerant: a lineage.json written by an older petseg (keys missing,
or of another type) reads with those fields empty, never an error, so
rollback --list works on every version ever pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from petseg.components.contracts.blessing import Blessing, read_blessing
from petseg.components.contracts.manifest import load_manifest, manifest_path
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.params import Params, params_to_dict

# Set in the project's images at build time (`--build-arg PETSEG_GIT_COMMIT=$(git rev-parse HEAD)`).
COMMIT_ENV = "PETSEG_GIT_COMMIT"
# The Kubeflow artifact URIs a lineage may carry (top-level keys of lineage.json).
ARTIFACT_KEYS = ("model_artifact", "evaluation_artifact", "validation_artifact")


# ------------------------------------------------------------ tolerant reading
def _str(data: dict, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _int(data: dict, key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(data: dict, key: str) -> bool | None:
    value = data.get(key)
    return value if isinstance(value, bool) else None


def _dict(data: dict, key: str) -> dict[str, Any]:
    value = data.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _str_dict(data: dict, key: str) -> dict[str, str]:
    return {str(k): v for k, v in _dict(data, key).items() if isinstance(v, str)}


# ---------------------------------------------------------------- the records
@dataclass(frozen=True)
class Lineage:
    """What collect_lineage records of a model about to be pushed (see the module docstring)."""

    runner: str = "cli"
    run_id: str = ""
    run_name: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    code_images: dict[str, str] = field(default_factory=dict)
    data_manifest_sha256: str | None = None
    validation_fingerprint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    params_sha256: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # ARTIFACT_KEYS -> URI (Kubeflow)

    def to_json(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "code_images": dict(self.code_images),
            "data_manifest_sha256": self.data_manifest_sha256,
            "validation_fingerprint": self.validation_fingerprint,
            "params": self.params,
            "params_sha256": self.params_sha256,
            **{key: self.artifacts[key] for key in ARTIFACT_KEYS if key in self.artifacts},
        }

    @classmethod
    def from_json(cls, data: Any) -> Lineage:
        """The lineage in a lineage.json object; missing or mistyped keys read as empty (older files)."""
        data = data if isinstance(data, dict) else {}
        return cls(
            runner=_str(data, "runner") or "",
            run_id=_str(data, "run_id") or "",
            run_name=_str(data, "run_name"),
            git_commit=_str(data, "git_commit"),
            git_dirty=_bool(data, "git_dirty"),
            code_images=_str_dict(data, "code_images"),
            data_manifest_sha256=_str(data, "data_manifest_sha256"),
            validation_fingerprint=_str(data, "validation_fingerprint"),
            params=_dict(data, "params"),
            params_sha256=_str(data, "params_sha256"),
            artifacts={key: data[key] for key in ARTIFACT_KEYS if isinstance(data.get(key), str)},
        )


@dataclass(frozen=True)
class BlessingRecord:
    """The blessing as lineage.json keeps it (evaluate's verdict, without its model and data parts)."""

    blessed: bool | None = None
    reason: str = ""
    checks: tuple[dict[str, Any], ...] = ()
    baseline: dict[str, Any] | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, blessing: Blessing) -> BlessingRecord:
        return cls(blessing.blessed, blessing.reason, tuple(blessing.checks), blessing.baseline, blessing.thresholds)

    def to_json(self) -> dict[str, Any]:
        return {
            "blessed": self.blessed,
            "reason": self.reason,
            "checks": list(self.checks),
            "baseline": self.baseline,
            "thresholds": self.thresholds,
        }

    @classmethod
    def from_json(cls, data: Any) -> BlessingRecord:
        data = data if isinstance(data, dict) else {}
        checks = data.get("checks")
        return cls(
            blessed=_bool(data, "blessed"),
            reason=_str(data, "reason") or "",
            checks=tuple(c for c in checks if isinstance(c, dict)) if isinstance(checks, list) else (),
            baseline=_dict(data, "baseline") or None,
            thresholds=_dict(data, "thresholds"),
        )


@dataclass(frozen=True)
class KeptDriftReference:
    """The validation report push kept in the version folder: where (`dir`), from where, of which data."""

    dir: str
    source: str
    fingerprint: str

    def to_json(self) -> dict[str, str]:
        return {"dir": self.dir, "source": self.source, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Any) -> KeptDriftReference | None:
        if not isinstance(data, dict) or not isinstance(data.get("dir"), str):
            return None
        return cls(data["dir"], _str(data, "source") or "", _str(data, "fingerprint") or "")


@dataclass(frozen=True)
class VersionRecord:
    """`<version>/lineage.json`: the lineage and what push recorded of the version (module docstring).

    `version` is None for a model push did not publish (declined); `pushed_at`
    and `infra_validation` are set once the staged copy passed.
    """

    lineage: Lineage
    model_name: str = ""
    version: int | None = None
    source_model: str = ""
    model_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    blessing: BlessingRecord = BlessingRecord()
    data: dict[str, Any] = field(default_factory=dict)
    drift_reference: KeptDriftReference | None = None
    pushed_at: str | None = None
    infra_validation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            **self.lineage.to_json(),
            "model_name": self.model_name,
            "version": self.version,
            "source_model": self.source_model,
            "model_fingerprint": self.model_fingerprint,
            "metrics": self.metrics,
            "blessing": self.blessing.to_json(),
            "data": self.data,
        }
        if self.drift_reference is not None:
            record["drift_reference"] = self.drift_reference.to_json()
        if self.pushed_at is not None:
            record["pushed_at"] = self.pushed_at
        if self.pushed_at is not None or self.infra_validation:
            record["infra_validation"] = self.infra_validation
        return record

    def to_text(self) -> str:
        """lineage.json's text (sorted keys, two-space indent)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> VersionRecord:
        """The record in a lineage.json object; what an older petseg did not write reads as empty."""
        data = data if isinstance(data, dict) else {}
        return cls(
            lineage=Lineage.from_json(data),
            model_name=_str(data, "model_name") or "",
            version=_int(data, "version"),
            source_model=_str(data, "source_model") or "",
            model_fingerprint=_str(data, "model_fingerprint") or "",
            metrics=_dict(data, "metrics"),
            blessing=BlessingRecord.from_json(data.get("blessing")),
            data=_dict(data, "data"),
            drift_reference=KeptDriftReference.from_json(data.get("drift_reference")),
            pushed_at=_str(data, "pushed_at"),
            infra_validation=_dict(data, "infra_validation"),
        )

    @classmethod
    def from_text(cls, text: str) -> VersionRecord | None:
        """The record in lineage.json's text; None when it is not JSON (a damaged file)."""
        try:
            return cls.from_json(json.loads(text))
        except ValueError:
            return None

    def published(self, pushed_at: str, infra_validation: dict[str, Any]) -> VersionRecord:
        """This record as push publishes it: staged at `pushed_at`, with the staged copy's infra validation."""
        return replace(self, pushed_at=pushed_at, infra_validation=dict(infra_validation))


def version_record(
    lineage: Lineage,
    blessing: Blessing,
    model_name: str,
    source_model: str,
    drift_reference: KeptDriftReference | None = None,
) -> VersionRecord:
    """The record of a model push is about to publish (not yet numbered), from its lineage and blessing."""
    return VersionRecord(
        lineage=lineage,
        model_name=model_name,
        source_model=source_model,
        model_fingerprint=blessing.model_fingerprint,
        metrics=dict(blessing.candidate),
        blessing=BlessingRecord.of(blessing),
        data=dict(blessing.data),
        drift_reference=drift_reference,
    )


# ------------------------------------------------------------------ gathering
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
    artifacts: dict[str, str] | None = None,
) -> Lineage:
    """The lineage of a model about to be pushed (see the module docstring for the fields).

    The commit is, in order: the git checkout at `repo_dir` (default: the
    working directory), $PETSEG_GIT_COMMIT (set in the images), `code_commit`.
    The data hash is the manifest's in `records_dir`, else the one the blessing recorded.
    """
    commit, dirty = git_state(Path(repo_dir) if repo_dir else Path.cwd())
    if commit is None:
        commit = os.environ.get(COMMIT_ENV) or code_commit or None
    blessing = read_blessing(blessing_file) if blessing_file else None
    sections = params_to_dict(params)
    return Lineage(
        runner=runner,
        run_id=run_id or f"{runner}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        run_name=run_name,
        git_commit=commit,
        git_dirty=dirty,
        code_images={str(k): str(v) for k, v in (code_images or {}).items()},
        data_manifest_sha256=_manifest_hash(records_dir)
        or (blessing.data.get("manifest_sha256") if blessing else None),
        validation_fingerprint=_validation_fingerprint(records_dir),
        params=sections,
        params_sha256=params_hash(sections),
        artifacts={k: v for k, v in (artifacts or {}).items() if k in ARTIFACT_KEYS},
    )


def params_hash(sections: dict[str, Any]) -> str:
    """sha256 of the params as canonical JSON (sorted keys, no spaces): equal params, equal hash."""
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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

"""The blessing: evaluate's verdict on a model, the only thing push and the Kubeflow condition read.

Like TFX's ModelBlessing: evaluate writes it, push refuses a model without a
positive, fresh one. blessing.json (inside evaluate's output folder):

    blessed       bool
    reason        one line: the failed checks, or all checks when blessed
    checks        [{name: min_mean_iou|min_accuracy|max_regression, passed, value, threshold, text}]
    candidate     {mean_iou, pixel_accuracy, iou}
    baseline      null (nothing served) | {version, path, mean_iou, pixel_accuracy, iou}
                  | {version, path, error} (served model could not be compared)
    thresholds    {min_mean_iou, min_accuracy, max_regression}
    model         {path, fingerprint}: sha256 of the SavedModel's files; push refuses another model
    data          {records, image_size, test_examples, manifest_sha256, counts (examples per split)}
    push_target   <model_base_path>/<model_name> the baseline was looked up at
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petseg.components.contracts.layout import BLESSING_FILE
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import read_step_json, write_json


@dataclass(frozen=True)
class Blessing:
    blessed: bool
    reason: str
    checks: tuple[dict[str, Any], ...] = ()
    candidate: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    model_path: str = ""
    model_fingerprint: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    push_target: str | None = None

    @property
    def baseline_version(self) -> int | None:
        """The served version the candidate was compared with (None when nothing was served)."""
        return (self.baseline or {}).get("version")

    def to_dict(self) -> dict[str, Any]:
        return {
            "blessed": self.blessed,
            "reason": self.reason,
            "checks": list(self.checks),
            "candidate": self.candidate,
            "baseline": self.baseline,
            "thresholds": self.thresholds,
            "model": {"path": self.model_path, "fingerprint": self.model_fingerprint},
            "data": self.data,
            "push_target": self.push_target,
        }


def blessing_path(path: str | Path) -> Path:
    """blessing.json itself, given it or evaluate's output folder."""
    path = Path(path)
    return path / BLESSING_FILE if path.is_dir() else path


def write_blessing(out_dir: str | Path, blessing: Blessing) -> None:
    write_json(Path(out_dir) / BLESSING_FILE, blessing.to_dict())


def read_blessing(path: str | Path) -> Blessing:
    """The blessing evaluate wrote (given the file or evaluate's folder), or PetsegError saying to run evaluate."""
    path = blessing_path(path)
    raw = read_step_json(path, "evaluate", missing="no blessing")
    if not isinstance(raw, dict) or not isinstance(raw.get("blessed"), bool):
        raise PetsegError(f"{path}: not a blessing file (no 'blessed'); run `petseg evaluate` again")
    model: dict[str, Any] = raw["model"] if isinstance(raw.get("model"), dict) else {}
    try:
        return Blessing(
            blessed=raw["blessed"],
            reason=str(raw.get("reason") or ""),
            checks=tuple(raw.get("checks") or ()),
            candidate=dict(raw.get("candidate") or {}),
            baseline=dict(raw["baseline"]) if raw.get("baseline") else None,
            thresholds=dict(raw.get("thresholds") or {}),
            model_path=str(model.get("path") or ""),
            model_fingerprint=str(model.get("fingerprint") or ""),
            data=dict(raw.get("data") or {}),
            push_target=raw.get("push_target"),
        )
    except (TypeError, ValueError) as exc:
        raise PetsegError(f"{path}: damaged blessing ({exc}); run `petseg evaluate` again") from None

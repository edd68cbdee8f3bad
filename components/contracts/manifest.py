"""The records manifest: what preprocess wrote beside the shards, read by train, evaluate and lineage.

manifest.json holds what a reader needs to read the shards (image size, class
names, counts, shard files with their sha256, ids per split) and what makes
them reproducible (the split rule, the params, the raw data's fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import read_step_json, write_json

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """manifest.json as a typed record; the optional parts are empty when a writer left them out."""

    image_size: int
    class_names: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    class_pixel_fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    shards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    ids_sha256: dict[str, str] = field(default_factory=dict)
    split_rule: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    raw_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "class_names": list(self.class_names),
            "counts": dict(self.counts),
            "class_pixel_fractions": dict(self.class_pixel_fractions),
            "shards": dict(self.shards),
            "ids": dict(self.ids),
            "ids_sha256": dict(self.ids_sha256),
            "split_rule": self.split_rule,
            "params": dict(self.params),
            "raw_fingerprint": self.raw_fingerprint,
        }


def manifest_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / MANIFEST_FILE


def write_manifest(records_dir: str | Path, manifest: Manifest) -> None:
    write_json(manifest_path(records_dir), manifest.to_dict())


def load_manifest(records_dir: str | Path) -> Manifest:
    """The manifest beside the shards, or PetsegError saying to run preprocess."""
    path = manifest_path(records_dir)
    raw = read_step_json(path, "preprocess", missing="not found, so this is not a records folder")
    size = raw.get("image_size") if isinstance(raw, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise PetsegError(
            f"{path}: not a preprocess manifest (no positive integer image_size); run `petseg preprocess` again"
        )
    try:
        return Manifest(
            image_size=size,
            class_names=tuple(raw.get("class_names") or ()),
            counts={str(k): int(v) for k, v in (raw.get("counts") or {}).items()},
            class_pixel_fractions=dict(raw.get("class_pixel_fractions") or {}),
            shards=dict(raw.get("shards") or {}),
            ids=dict(raw.get("ids") or {}),
            ids_sha256=dict(raw.get("ids_sha256") or {}),
            split_rule=str(raw.get("split_rule") or ""),
            params=dict(raw.get("params") or {}),
            raw_fingerprint=str(raw.get("raw_fingerprint") or ""),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise PetsegError(f"{path}: damaged manifest ({exc}); run `petseg preprocess` again") from None

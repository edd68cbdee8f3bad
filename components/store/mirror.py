"""A local copy of a model store on an object store, kept in step for a TF Serving that cannot read it.

TF Serving 2.7 and later has no S3 file system (tensorflow/serving commit d683fa16
"Remove references to deleted targets" dropped `tensorflow/core/platform/s3`
from model_servers/BUILD; 2.20.0 links only gcs_file_system). So a TF Serving
Deployment serving an s3:// store reads a local folder that a sidecar fills:
`petseg mirror --from s3://... --to /models` (serving/deploy/components/s3-models).

One pass, in the order that keeps the copy servable at every moment:

1. each complete version the store lists (ModelStore.version_numbers: a
   saved_model.pb, not being published) that the copy lacks is copied into a
   hidden folder, saved_model.pb last, and renamed into place;
2. models.config (which versions TF Serving loads, and labels) is replaced
   atomically, once every version it can name is here;
3. versions the store no longer has are deleted from the copy.

Only folders this mirror writes are touched in the target: all-digit version
folders of the model and models.config (and its own hidden temporaries).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from petseg.components.core.errors import PetsegError, first_line
from petseg.components.store import model_store
from petseg.components.store.credentials import require_store_access
from petseg.components.store.model_store import ModelStore, storage

TEMP_PREFIX = ".mirror-"


@dataclass(frozen=True)
class MirrorPass:
    """What one pass changed in the local copy."""

    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    config_changed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.config_changed)


def local_versions(target: Path, model_name: str) -> set[int]:
    """The complete versions in the local copy (the model store's own rule for which folders count)."""
    return set(ModelStore(str(target), model_name).available_versions())


def mirror_once(source: str, target: str | Path, model_name: str) -> MirrorPass:
    """Bring `target` in step with the store at `source` (see the module docstring); PetsegError on a refusal."""
    target = Path(target)
    store = ModelStore(source, model_name)
    model_dir = target / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    for leftover in model_dir.glob(TEMP_PREFIX + "*"):  # a pass killed midway
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        remote = set(store.version_numbers())
        added = sorted(remote - local_versions(target, model_name))
        for version in added:
            staging = model_dir / f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            storage.copy_tree(store.version_path(version), str(staging), last=model_store.SAVED_MODEL_FILE)
            os.rename(staging, model_dir / str(version))
        local = ModelStore(str(target), model_name)
        config_changed = _copy_config(store.config_path, Path(local.config_path))
    except OSError as exc:
        raise PetsegError(f"mirror: cannot copy from {source} ({first_line(exc)})") from None
    removed = sorted(local_versions(target, model_name) - remote)
    for version in removed:
        shutil.rmtree(model_dir / str(version))
    return MirrorPass(added, removed, config_changed)


def _copy_config(remote: str, local: Path) -> bool:
    """Replace `local` with the store's models.config when it differs; whether it changed. No config: left as is."""
    if not storage.exists(remote):
        return False
    data = storage.read_bytes(remote)
    if local.is_file() and local.read_bytes() == data:
        return False
    temporary = local.with_name(f"{TEMP_PREFIX}{local.name}-{uuid.uuid4().hex[:8]}")
    temporary.write_bytes(data)
    os.replace(temporary, local)
    return True


def mirror(
    source: str,
    target: str | Path,
    model_name: str,
    every_seconds: float,
    passes: int | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Mirror every `every_seconds` (`passes` times, or for ever). The credentials are checked first.

    A failed pass after the first is one line on stderr and the copy stays as it
    was, still served; the first pass's failure is raised (nothing to serve yet).
    """
    require_store_access(source)
    done = 0
    while passes is None or done < passes:
        try:
            result = mirror_once(source, target, model_name)
        except PetsegError as exc:
            if done == 0:
                raise
            print(f"mirror: {exc}; keeping the copy as it is", file=sys.stderr, flush=True)
        else:
            if result.changed:
                log(
                    f"mirror: {source} -> {target}: added {result.added or 'none'}, removed "
                    f"{result.removed or 'none'}{', models.config updated' if result.config_changed else ''}"
                )
        done += 1
        if passes is None or done < passes:
            time.sleep(every_seconds)

"""Writing step outputs so a reader never sees them half-written."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from petseg.components.core.errors import PetsegError, first_line


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final` whole.

    On any exception the staging folder is removed and `final` is left as it was,
    so the next step (or DVC) never reads a partial output.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    staging.chmod(0o777 & ~_current_umask())  # mkdtemp makes it 0700; outputs should be readable as usual
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_output(path: str | Path) -> None:
    """Delete a previous output (file or folder) so a failed step leaves nothing stale behind."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), pretty-printed for people and diffs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_step_json(path: str | Path, step: str, missing: str = "missing") -> Any:
    """A JSON file an earlier step wrote, or PetsegError telling the user to run `petseg <step>`."""
    path = Path(path)
    if not path.is_file():
        raise PetsegError(f"{path}: {missing}; run `petseg {step}` first")
    try:
        return read_json(path)
    except ValueError as exc:
        raise PetsegError(f"{path}: unreadable ({exc}); run `petseg {step}` again") from None


@contextlib.contextmanager
def io_errors_named(target: str | Path, step: str) -> Iterator[None]:
    """Turn an OSError (disk full, file size limit, permission denied, read-only target) into one line.

    Wrap a step's `atomic_directory` block in this: by the time the error arrives here the
    staging folder is gone, so the line can say that `target` was left as it was.
    """
    try:
        yield
    except OSError as exc:
        # A file in atomic_directory's (now removed) staging folder is named by its place in `target`.
        staging = re.compile(rf"{re.escape(str(Path(target).parent))}/\.{re.escape(Path(target).name)}\.partial-[^/]+")
        where = staging.sub(str(target), str(exc.filename)) if exc.filename else target
        reason = exc.strerror or first_line(exc)
        raise PetsegError(
            f"I/O error on {where}: {reason}; {target} left as it was (partial output removed); "
            f"free space or fix permissions, then run `petseg {step}` again"
        ) from None


def check_output_dir(path: str | Path, marker: str, step: str, owned: tuple[str, ...] = ()) -> None:
    """Refuse an --out that is a file, or a non-empty folder this step did not write.

    A folder counts as this step's when it holds `marker`, or when every entry in it matches
    one of the `owned` glob patterns (e.g. a previous run's shards). `atomic_directory`
    replaces its target whole, so this keeps a user's own folder from being deleted by a
    mistyped --out.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise PetsegError(f"--out {path}: exists and is not a folder; choose another --out")
    if not path.is_dir() or (path / marker).exists():
        return
    foreign = [p.name for p in path.iterdir() if not any(fnmatch.fnmatch(p.name, pattern) for pattern in owned)]
    if foreign:
        raise PetsegError(
            f"--out {path}: holds {foreign[0]!r} and no {marker}, so `petseg {step}` did not write it; "
            "choose another --out or empty it yourself"
        )

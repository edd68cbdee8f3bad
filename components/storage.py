"""File-system access for paths that may be local folders or object-store URIs (gs://, s3://).

Every module that reads or writes the model base path (or anything else a
user may point at a bucket) goes through these functions, so there is one
place that decides how a URI is reached. Paths are plain strings; URIs use
'/' as separator, local paths are whatever the OS takes.

The backend today is tf.io.gfile, which covers local paths, gs:// and TF's
in-memory ram://. (TensorFlow 2.21 has no s3:// file system.)
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import IO, Iterator


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (object stores, ram://), False for local paths."""
    return "://" in str(path)


def join(*parts: str) -> str:
    """Join path parts for local paths and URIs alike ('/' everywhere)."""
    head, *rest = (str(p) for p in parts)
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest if p.strip("/"))])


def parent(path: str) -> str:
    """The folder holding `path`."""
    path = str(path).rstrip("/")
    return path.rsplit("/", 1)[0] if "/" in path else "."


def exists(path: str) -> bool:
    return _gfile().exists(str(path))


def isdir(path: str) -> bool:
    return _gfile().isdir(str(path))


def listdir(path: str) -> list[str]:
    """Entry names in a folder (no trailing '/'), sorted."""
    return sorted(name.rstrip("/") for name in _gfile().listdir(str(path)))


def makedirs(path: str) -> None:
    _gfile().makedirs(str(path))


def open_file(path: str, mode: str = "r") -> IO:
    """An open file object; modes 'r', 'rb', 'w', 'wb'."""
    return _gfile().GFile(str(path), mode)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as fh:
        return fh.read()


def read_text(path: str) -> str:
    """The file's text, decoded as UTF-8 (UnicodeDecodeError for other bytes)."""
    return read_bytes(path).decode("utf-8")


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename over it: a reader sees old or new, never half.

    On object stores the rename is a server-side copy of one object, whole or not at all.
    """
    path = str(path)
    makedirs(parent(path))
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if is_uri(path):
        with open_file(tmp, "wb") as fh:
            fh.write(data)
        _gfile().rename(tmp, path, overwrite=True)
        return
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomically(path: str, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def copy_file(src: str, dst: str) -> None:
    _gfile().copy(str(src), str(dst), overwrite=True)


def walk_files(root: str) -> list[str]:
    """Paths of every file under `root`, relative to it with '/' separators, sorted."""
    root = str(root).rstrip("/")
    found = []
    for folder, _, names in _gfile().walk(root):
        rel = str(folder).rstrip("/")[len(root):].strip("/")
        found += [f"{rel}/{name}" if rel else name for name in names]
    return sorted(found)


def copy_tree(src: str, dst: str, last: str | None = None) -> None:
    """Copy a folder tree file by file; the file named `last` (relative path) is copied last.

    Copying saved_model.pb last means a copy that has it is complete.
    """
    files = walk_files(src)
    files.sort(key=lambda rel: rel == last)
    makedirs(dst)
    for rel in files:
        target = join(dst, rel)
        makedirs(parent(target))
        copy_file(join(src, rel), target)


def rename_dir(src: str, dst: str) -> None:
    """Rename a local folder (atomic, fails if `dst` exists). Object stores cannot: see supports_rename."""
    if is_uri(src) or is_uri(dst):
        raise ValueError(f"cannot rename folders on an object store ({src} -> {dst}); copy instead")
    _gfile().rename(str(src), str(dst), overwrite=False)


def supports_rename(path: str) -> bool:
    """Whether folders at `path` can be renamed atomically (local file systems only)."""
    return not is_uri(path)


def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (nothing when it does not exist)."""
    if exists(path):
        _gfile().rmtree(str(path))


def remove_file(path: str) -> None:
    if exists(path):
        _gfile().remove(str(path))


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local folder with the contents of `path`: the folder itself when local, else a temporary copy.

    For libraries that can only read local files (TensorFlow loading a SavedModel
    from a store it has no file system for).
    """
    if not is_uri(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="petseg-copy-") as tmp:
        target = os.path.join(tmp, "copy")
        copy_tree(path, target)
        yield target

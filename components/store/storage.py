"""File-system access for paths that may be local folders or object-store URIs (s3://, gs://).

Every module that reads or writes the model base path (or anything else a
user may point at a bucket) goes through these functions, so there is one
place that decides how a URI is reached. Paths are plain strings; URIs use
'/' as separator, local paths are whatever the OS takes.

Backends:

- fsspec for local paths and every URI scheme it knows: `s3://` through s3fs
  (extra `petseg[s3]`), `gs://` through gcsfs (extra `petseg[gcs]`), `memory://`
  (fsspec's in-process store, for tests). Credentials and endpoints come from
  each library's usual environment: for S3 `AWS_ACCESS_KEY_ID`,
  `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3` (MinIO, moto, Ceph...) or
  `FSSPEC_S3_ENDPOINT_URL`; for GCS `GOOGLE_APPLICATION_CREDENTIALS` or the
  metadata server.
- tf.io.gfile for `ram://`, TensorFlow's own in-memory file system, which only
  TensorFlow can see (tests use it to stand in for a store TF writes itself).

TensorFlow 2.21 cannot open `s3://` (no file system for it) and fsspec's
stores are invisible to TF, so anything TensorFlow must load from a store goes
through local_copy first; anything TF must write goes to a local folder that
copy_tree then uploads.

Object stores have no folders: a "folder" is the prefix of the objects under
it, makedirs is a no-op there, and a folder exists once an object is under it.
Listings are never cached, because other processes (another push, a rollback)
change the store between two calls.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any

from petseg.components.core.errors import PetsegError

# URI schemes reached through tf.io.gfile instead of fsspec (only TensorFlow can see them).
GFILE_SCHEMES = frozenset({"ram"})
# The extra that brings the fsspec implementation of each object-store scheme.
EXTRA_FOR_SCHEME = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
# Schemes whose objects a single PUT replaces whole (no temporary object + rename needed).
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "memory"})


# ------------------------------------------------------------------ path helpers
def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (object stores, memory://, ram://), False for local paths."""
    return "://" in str(path)


def scheme(path: str) -> str:
    """The URI scheme in lower case (`s3`, `gs`, ...), or "" for a local path."""
    path = str(path)
    return path.split("://", 1)[0].lower() if is_uri(path) else ""


def join(*parts: str) -> str:
    """Join path parts for local paths and URIs alike ('/' everywhere)."""
    head, *rest = (str(p) for p in parts)
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest if p.strip("/"))])


def parent(path: str) -> str:
    """The folder holding `path`."""
    path = str(path).rstrip("/")
    return path.rsplit("/", 1)[0] if "/" in path else "."


def basename(path: str) -> str:
    """The last component of `path`."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------- backends
class _Gfile:
    """tf.io.gfile, for schemes only TensorFlow knows (ram://)."""

    def __init__(self):
        import tensorflow as tf

        self.g = tf.io.gfile

    def exists(self, path: str) -> bool:
        return self.g.exists(path)

    def isdir(self, path: str) -> bool:
        return self.g.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return [name.rstrip("/") for name in self.g.listdir(path)]

    def makedirs(self, path: str) -> None:
        self.g.makedirs(path)

    def open(self, path: str, mode: str) -> IO:
        return self.g.GFile(path, mode)

    def find(self, root: str) -> list[str]:
        found = []
        for folder, _, names in self.g.walk(root):
            rel = str(folder).rstrip("/")[len(root) :].strip("/")
            found += [f"{rel}/{name}" if rel else name for name in names]
        return found

    def copy_within(self, src: str, dst: str) -> None:
        self.g.copy(src, dst, overwrite=True)

    def replace_file(self, src: str, dst: str) -> None:
        self.g.rename(src, dst, overwrite=True)

    def rmtree(self, path: str) -> None:
        self.g.rmtree(path)

    def rm_file(self, path: str) -> None:
        self.g.remove(path)


class _Fsspec:
    """An fsspec file system for local paths and the URI schemes fsspec knows."""

    def __init__(self, fs: Any):
        self.fs = fs

    def _fresh(self, path: str) -> str:
        # Another process may have changed the store since the last call: never answer from a listing cache.
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)
        return path

    def exists(self, path: str) -> bool:
        return self.fs.exists(self._fresh(path))

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(self._fresh(path))

    def listdir(self, path: str) -> list[str]:
        self._fresh(path)
        if not self.fs.isdir(path):
            raise FileNotFoundError(f"{path}: no such folder")
        stripped = self.fs._strip_protocol(path).rstrip("/")
        names = []
        for entry in self.fs.ls(path, detail=False):
            entry = str(entry).rstrip("/")
            if entry == stripped:  # some stores list a folder's own marker object
                continue
            names.append(entry.rsplit("/", 1)[-1])
        return names

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def open(self, path: str, mode: str) -> IO:
        return self.fs.open(path, mode)

    def find(self, root: str) -> list[str]:
        self._fresh(root)
        base = self.fs._strip_protocol(root).rstrip("/")
        if not self.fs.isdir(root):
            return []
        return [str(p)[len(base) :].lstrip("/") for p in self.fs.find(root) if str(p) != base]

    def copy_within(self, src: str, dst: str) -> None:
        self.fs.cp_file(src, dst)

    def replace_file(self, src: str, dst: str) -> None:
        self.fs.mv(src, dst)

    def rmtree(self, path: str) -> None:
        self.fs.rm(path, recursive=True)

    def rm_file(self, path: str) -> None:
        self.fs.rm_file(path)


def _backend(path: str):
    """The backend object that reaches `path`; PetsegError naming the extra when its library is missing."""
    kind = scheme(path)
    if kind in GFILE_SCHEMES:
        return _Gfile()
    return _Fsspec(filesystem(path))


def filesystem(path: str) -> Any:
    """The fsspec file system for `path` (local for plain paths), configured from the environment.

    Raises PetsegError in one line when the scheme needs an extra that is not
    installed, or fsspec does not know the scheme at all.
    """
    import fsspec

    kind = scheme(path) or "file"
    options: dict[str, Any] = {}
    if kind not in ("file", "local", "memory"):
        options["use_listings_cache"] = False
    try:
        return fsspec.filesystem(kind, **options)
    except ImportError:
        extra = EXTRA_FOR_SCHEME.get(kind)
        hint = f"pip install 'petseg[{extra}]'" if extra else "install the fsspec implementation for it"
        raise PetsegError(f"{path}: the {kind}:// file system is not installed; {hint}") from None
    except ValueError:
        raise PetsegError(
            f"{path}: unknown URI scheme '{kind}://' (use a local path, s3://, gs:// or memory://)"
        ) from None


def _plain(path: str) -> str:
    """`path` as its backend takes it: URIs unchanged, local paths as given (fsspec resolves them)."""
    return str(path)


# ------------------------------------------------------------------ operations
def exists(path: str) -> bool:
    """Whether a file or folder (on stores: any object under the prefix) is at `path`."""
    return _backend(path).exists(_plain(path))


def isdir(path: str) -> bool:
    return _backend(path).isdir(_plain(path))


def isfile(path: str) -> bool:
    """Whether `path` is a file (an object, on stores)."""
    return exists(path) and not isdir(path)


def listdir(path: str) -> list[str]:
    """Entry names in a folder (no trailing '/'), sorted.

    FileNotFoundError when there is no such folder; on an object store, where
    an empty folder and no folder are the same thing, an empty list.
    """
    if scheme(path) in OBJECT_STORE_SCHEMES and not exists(path):
        return []
    return sorted(_backend(path).listdir(_plain(path)))


def makedirs(path: str) -> None:
    """Create the folder and its parents (nothing to do on object stores, which have no folders)."""
    if scheme(path) in OBJECT_STORE_SCHEMES - {"memory"}:
        return
    _backend(path).makedirs(_plain(path))


def open_file(path: str, mode: str = "r") -> IO:
    """An open file object; modes 'r', 'rb', 'w', 'wb'."""
    if mode not in ("r", "rb", "w", "wb"):
        raise ValueError(f"open_file: unsupported mode {mode!r} (use r, rb, w or wb)")
    return _backend(path).open(_plain(path), mode)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as fh:
        return fh.read()


def read_text(path: str) -> str:
    """The file's text, decoded as UTF-8 (UnicodeDecodeError for other bytes)."""
    return read_bytes(path).decode("utf-8")


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Write `path` so that a reader sees the old content or the new, never half.

    Local files: a temporary name beside `path`, then a rename over it. Object
    stores: one PUT, which the store applies whole or not at all. Other URIs
    (ram://): a temporary object renamed over the old one.
    """
    path = str(path)
    makedirs(parent(path))
    kind = scheme(path)
    if kind in OBJECT_STORE_SCHEMES:
        with open_file(path, "wb") as fh:
            fh.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if kind:
        backend = _backend(path)
        try:
            with backend.open(tmp, "wb") as fh:
                fh.write(data)
            backend.replace_file(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                backend.rm_file(tmp)
            raise
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
    """Copy one file, overwriting `dst`, between any two places (local, store, another store)."""
    src, dst = str(src), str(dst)
    if scheme(src) == scheme(dst):
        _backend(src).copy_within(src, dst)
        return
    if scheme(src) not in GFILE_SCHEMES and scheme(dst) not in GFILE_SCHEMES:
        if not is_uri(src):
            filesystem(dst).put_file(src, dst)
            return
        if not is_uri(dst):
            filesystem(src).get_file(src, dst)
            return
    with open_file(src, "rb") as reader, open_file(dst, "wb") as writer:
        while chunk := reader.read(1 << 22):
            writer.write(chunk)


def walk_files(root: str) -> list[str]:
    """Paths of every file under `root`, relative to it with '/' separators, sorted ([] when there is none)."""
    root = str(root).rstrip("/")
    return sorted(_backend(root).find(root))


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
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} already exists; not renaming {src} over it")
    os.rename(src, dst)


def supports_rename(path: str) -> bool:
    """Whether folders at `path` can be renamed atomically (local file systems only)."""
    return not is_uri(path)


def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (nothing when it does not exist)."""
    if exists(path):
        _backend(path).rmtree(_plain(path))


def remove_file(path: str) -> None:
    if exists(path):
        _backend(path).rm_file(_plain(path))


@contextlib.contextmanager
def local_copy(path: str, only: tuple[str, ...] = ()) -> Iterator[str]:
    """A local folder with the contents of `path`: the folder itself when local, else a temporary copy.

    For libraries that can only read local files (TensorFlow loading a SavedModel
    from a store it has no file system for). `only` names the files (relative
    paths) to copy when not all are needed; those missing are left out. The
    copy is deleted on exit.
    """
    if not is_uri(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="petseg-copy-") as tmp:
        target = os.path.join(tmp, "copy")
        if only:
            makedirs(target)
            for name in only:
                if exists(join(path, name)):
                    copy_file(join(path, name), os.path.join(target, name))
        else:
            copy_tree(path, target)
        yield target


@contextlib.contextmanager
def local_workdir(destination: str) -> Iterator[str]:
    """A local folder to build something TensorFlow writes, before it goes to `destination`.

    `destination`'s own parent folder when it is local (so a rename publishes
    it), else a temporary folder deleted on exit. The caller copies what it
    built with copy_tree.
    """
    if not is_uri(destination):
        folder = parent(str(destination))
        os.makedirs(folder, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="petseg-stage-") as tmp:
        yield tmp

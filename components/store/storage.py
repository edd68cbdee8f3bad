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

Faults. Every operation here that reaches an object store turns the store's
refusal into one StoreError line naming the store and the way out (wrong
credentials, access denied, a missing bucket, an unreachable endpoint,
throttling that outlasted the retries): `store_fault` is the one translation
of s3fs/gcsfs/botocore/aiohttp errors. The first operation on a bucket in a
process also probes it (one listing of at most one key), so a typo in the
bucket name is a refusal, not an empty store. The clients fail fast: a
connection gets CONNECT_TIMEOUT_SECONDS, a request at most MAX_ATTEMPTS tries
(botocore's "standard" retry mode, exponential backoff with jitter; the
environment's AWS_MAX_ATTEMPTS / AWS_RETRY_MODE win when set).

Create-if-absent. `create_exclusive` writes an object only when no object has
that name, atomically on the server: S3's conditional PUT (`If-None-Match: *`,
through s3fs `mode="create"`), GCS's `ifGenerationMatch=0` (gcsfs
`mode="create"`, a single multipart upload for small objects), O_EXCL locally.
The model store claims version numbers and its lock with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from petseg.components.core.errors import PetsegError, first_line

# URI schemes reached through tf.io.gfile instead of fsspec (only TensorFlow can see them).
GFILE_SCHEMES = frozenset({"ram"})
# The extra that brings the fsspec implementation of each object-store scheme.
EXTRA_FOR_SCHEME = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
# Schemes whose objects a single PUT replaces whole (no temporary object + rename needed).
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "memory"})
# Remote stores: reached over the network, probed once per bucket, their faults translated.
REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})
# Fail fast: seconds to open a connection, seconds to wait for a byte, tries per request.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
MAX_ATTEMPTS = 3


class StoreError(PetsegError):
    """An object store refused a request or could not be reached; the message names the store and the way out."""


class AlreadyExistsError(PetsegError):
    """create_exclusive found an object already at that name (another writer claimed it first)."""


_F = TypeVar("_F", bound=Callable[..., Any])


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


def store_url(path: str) -> str:
    """`scheme://bucket` of an object-store path: the store a fault message names."""
    kind, _, rest = str(path).partition("://")
    return f"{kind}://{rest.split('/', 1)[0]}"


# ------------------------------------------------------------------- faults
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the store does not know this access key id (InvalidAccessKeyId)",
    "InvalidClientTokenId": "the store does not know this access key id (InvalidClientTokenId)",
    "SignatureDoesNotMatch": "the secret key does not match the access key id (SignatureDoesNotMatch)",
    "ExpiredToken": "the session token has expired (ExpiredToken)",
    "InvalidToken": "the session token is not valid (InvalidToken)",
    "TokenRefreshRequired": "the session token has expired (TokenRefreshRequired)",
    "RequestTimeTooSkewed": "this machine's clock is too far from the store's (RequestTimeTooSkewed)",
}
_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "503", "429"}
)
_CREDENTIALS_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key of this store",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key of this project",
}
_PERMISSION_HINT = {
    "s3": "grant this identity s3:ListBucket on the bucket and s3:GetObject, s3:PutObject, s3:DeleteObject "
    "under the path, or use credentials that have them",
    "gs": "grant this identity roles/storage.objectAdmin on the bucket, or use credentials that have it",
}
_ENDPOINT_HINT = {
    "s3": "check AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and that the store is up and reachable from here",
    "gs": "check STORAGE_EMULATOR_HOST / the network route to storage.googleapis.com",
}


_SAFE_CODE = re.compile(r"[^A-Za-z0-9_.-]")  # an error code is the server's text: only its word goes in a line


def _family(kind: str) -> str:
    return "gs" if kind in ("gs", "gcs") else "s3"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from (cause or context), outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _client_error(exc: BaseException) -> tuple[str, int, int] | None:
    """(error code, HTTP status, retries made) of the botocore ClientError in `exc`'s chain, if any."""
    for err in _chain(exc):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and "Error" in response:
            meta = response.get("ResponseMetadata") or {}
            code = str(response["Error"].get("Code") or meta.get("HTTPStatusCode") or "")
            return code, int(meta.get("HTTPStatusCode") or 0), int(meta.get("RetryAttempts") or 0)
    return None


def _http_status(exc: BaseException) -> int:
    """The HTTP status a gcsfs HttpError (or similar) carries in its chain, 0 when none."""
    for err in _chain(exc):
        code = getattr(err, "code", None)
        if isinstance(code, int) and 100 <= code < 600:
            return code
    return 0


_UNREACHABLE_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ConnectionError",
        "ConnectionRefusedError",
        "TimeoutError",
        "ClientOSError",
    }
)
_NO_CREDENTIALS_NAMES = frozenset({"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"})


def store_fault(exc: BaseException, path: str) -> str | None:
    """The one line a store fault under `path` gets (store URL, what is wrong, what to do), or None.

    None means `exc` is not a fault of the store's access (a missing object, a
    local error, a bug): the caller lets it through unchanged.
    """
    kind = scheme(path)
    if kind not in REMOTE_SCHEMES:
        return None
    family = _family(kind)
    where = store_url(path)
    names = {type(err).__name__ for err in _chain(exc)}
    if names & _NO_CREDENTIALS_NAMES:
        return f"{where}: no credentials for the store were found; {_CREDENTIALS_HINT[family]}"
    found = _client_error(exc)
    status = found[1] if found else _http_status(exc)
    code = _SAFE_CODE.sub("", found[0])[:64] if found else str(status or "")
    retries = found[2] if found else 0
    if code in _CREDENTIAL_CODES or (family == "gs" and status == 401):
        what = _CREDENTIAL_CODES.get(code, "the store refused the credentials (HTTP 401)")
        return f"{where}: {what}; {_CREDENTIALS_HINT[family]}"
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or status == 403:
        what = f"access denied ({code})" if code and code != "403" else "access refused (HTTP 403)"
        return f"{where}: {what}; {_PERMISSION_HINT[family]}"
    if code == "NoSuchBucket":
        return _no_bucket(where)
    if code in _THROTTLE_CODES or status in (429, 503):
        tries = f" after {retries + 1} tries" if retries else ""
        return (
            f"{where}: the store is throttling requests ({code or status}){tries}; try again later, "
            "or set AWS_MAX_ATTEMPTS higher to retry longer"
        )
    if status >= 500:
        return f"{where}: the store failed the request (HTTP {status} {code}); try again later"
    if names & _UNREACHABLE_NAMES:
        endpoint = _endpoint_of(exc)
        return f"{where}: cannot reach the store{endpoint} ({_short_reason(exc)}); {_ENDPOINT_HINT[family]}"
    return None


def _no_bucket(where: str) -> str:
    return f"{where}: the bucket does not exist; create it, or fix the bucket name in the path"


def _endpoint_of(exc: BaseException) -> str:
    """' at http://host:port' from the error's URL, '' when it names none."""
    for err in _chain(exc):
        url = (getattr(err, "kwargs", None) or {}).get("endpoint_url") or ""
        match = re.match(r"(https?://[^/\s\"]+)", str(url)) or re.search(r"(https?://[^/\s\"]+)", str(err))
        if match:
            return f" at {match.group(1)}"
    return ""


def _short_reason(exc: BaseException) -> str:
    """What the innermost connection error says, without URLs, on one line."""
    inner = _chain(exc)[-1]
    text = re.sub(r"https?://\S+", "", first_line(inner)).strip(" :\"'")
    return f"{type(inner).__name__}: {text}"[:200] if text else type(inner).__name__


def _translated(fn: _F) -> _F:
    """Run `fn(path, ...)`; a store fault of the path (the first URI argument) becomes one StoreError line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PetsegError:
            raise
        except Exception as exc:
            uris = [str(a) for a in args if isinstance(a, str) and is_uri(a)]
            line = store_fault(exc, uris[-1]) if uris else None
            if line is None:
                raise
            raise StoreError(line) from None

    return wrapper  # type: ignore[return-value]


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
    return _Fsspec(_checked_filesystem(path))


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
    if kind in ("s3", "s3a"):
        options["config_kwargs"] = _botocore_config()
    try:
        fs = fsspec.filesystem(kind, **options)
    except ImportError:
        extra = EXTRA_FOR_SCHEME.get(kind)
        hint = f"pip install 'petseg[{extra}]'" if extra else "install the fsspec implementation for it"
        raise PetsegError(f"{path}: the {kind}:// file system is not installed; {hint}") from None
    except ValueError:
        raise PetsegError(
            f"{path}: unknown URI scheme '{kind}://' (use a local path, s3://, gs:// or memory://)"
        ) from None
    if kind in REMOTE_SCHEMES:
        fs.retries = 1  # s3fs's own retry loop on top of botocore's: botocore's bounded tries are enough
    if _family(kind) == "gs":
        # gcsfs logs each failed request with its traceback; the fault reaches the user as one StoreError line
        logging.getLogger("gcsfs").addHandler(logging.NullHandler())
    return fs


def _checked_filesystem(path: str) -> Any:
    """filesystem(path), its bucket probed first (once per process) when it is a remote store."""
    fs = filesystem(path)
    if scheme(path) in REMOTE_SCHEMES:
        _probe_once(fs, path)
    return fs


def _require_gcs_endpoint(where: str) -> None:
    """StoreError at once when the GCS endpoint takes no connection within CONNECT_TIMEOUT_SECONDS.

    gcsfs retries a refused connection six times with exponential backoff
    (about half a minute per request) and has no connect timeout setting;
    one plain TCP connection tells an unreachable endpoint in seconds.
    """
    import socket
    from urllib.parse import urlsplit

    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as exc:
        reason = f"{type(exc).__name__}: {_os_reason(exc)}"
        raise StoreError(
            f"{where}: cannot reach the store at {parts.scheme}://{parts.netloc} ({reason}); {_ENDPOINT_HINT['gs']}"
        ) from None


def _os_reason(exc: OSError) -> str:
    return exc.strerror or first_line(exc) or "no answer"


def _botocore_config() -> dict[str, Any]:
    """botocore Config arguments that fail fast (see the module docstring); the environment's retry settings win."""
    config: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS}
    if not os.environ.get("AWS_MAX_ATTEMPTS") and not os.environ.get("AWS_RETRY_MODE"):
        config["retries"] = {"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"}
    return config


_probed: set[tuple[str, str]] = set()
_probe_lock = threading.Lock()


def _probe_once(fs: Any, path: str) -> None:
    """probe_store(path) once per process and bucket (and endpoint): later calls trust the first answer."""
    where = store_url(path)
    key = (where, os.environ.get("AWS_ENDPOINT_URL_S3", "") + os.environ.get("AWS_ENDPOINT_URL", ""))
    with _probe_lock:
        if key in _probed:
            return
    _probe(fs, path)
    with _probe_lock:
        _probed.add(key)


def probe_store(path: str) -> None:
    """Check now that the store under `path` answers, knows the credentials and has the bucket; StoreError if not.

    One listing of at most one key in the path's bucket. Local paths need no check.
    """
    if scheme(path) in REMOTE_SCHEMES:
        _probe(filesystem(path), path)


def _probe(fs: Any, path: str) -> None:
    where = store_url(path)
    bucket = where.split("://", 1)[1]
    if _family(scheme(path)) == "gs":
        _require_gcs_endpoint(where)
    try:
        if _family(scheme(path)) == "s3":
            fs.call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
        elif not fs.exists(bucket):
            raise StoreError(_no_bucket(where))
    except PetsegError:
        raise
    except FileNotFoundError as exc:
        raise StoreError(store_fault(exc, path) or _no_bucket(where)) from None
    except Exception as exc:
        line = store_fault(exc, path)
        if line is None:
            raise
        raise StoreError(line) from None


def _plain(path: str) -> str:
    """`path` as its backend takes it: URIs unchanged, local paths as given (fsspec resolves them)."""
    return str(path)


# ------------------------------------------------------------------ operations
@_translated
def exists(path: str) -> bool:
    """Whether a file or folder (on stores: any object under the prefix) is at `path`."""
    return _backend(path).exists(_plain(path))


@_translated
def isdir(path: str) -> bool:
    return _backend(path).isdir(_plain(path))


@_translated
def isfile(path: str) -> bool:
    """Whether `path` is a file (an object, on stores)."""
    return exists(path) and not isdir(path)


@_translated
def listdir(path: str) -> list[str]:
    """Entry names in a folder (no trailing '/'), sorted.

    FileNotFoundError when there is no such folder; on an object store, where
    an empty folder and no folder are the same thing, an empty list.
    """
    if scheme(path) in OBJECT_STORE_SCHEMES and not exists(path):
        return []
    return sorted(_backend(path).listdir(_plain(path)))


@_translated
def makedirs(path: str) -> None:
    """Create the folder and its parents (nothing to do on object stores, which have no folders)."""
    if scheme(path) in OBJECT_STORE_SCHEMES - {"memory"}:
        return
    _backend(path).makedirs(_plain(path))


@_translated
def open_file(path: str, mode: str = "r") -> IO:
    """An open file object; modes 'r', 'rb', 'w', 'wb'."""
    if mode not in ("r", "rb", "w", "wb"):
        raise ValueError(f"open_file: unsupported mode {mode!r} (use r, rb, w or wb)")
    return _backend(path).open(_plain(path), mode)


@_translated
def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as fh:
        return fh.read()


@_translated
def read_text(path: str) -> str:
    """The file's text, decoded as UTF-8 (UnicodeDecodeError for other bytes)."""
    return read_bytes(path).decode("utf-8")


@_translated
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


@_translated
def write_text_atomically(path: str, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


@_translated
def copy_file(src: str, dst: str) -> None:
    """Copy one file, overwriting `dst`, between any two places (local, store, another store)."""
    src, dst = str(src), str(dst)
    if scheme(src) == scheme(dst):
        _backend(src).copy_within(src, dst)
        return
    if scheme(src) not in GFILE_SCHEMES and scheme(dst) not in GFILE_SCHEMES:
        if not is_uri(src):
            _checked_filesystem(dst).put_file(src, dst)
            return
        if not is_uri(dst):
            _checked_filesystem(src).get_file(src, dst)
            return
    with open_file(src, "rb") as reader, open_file(dst, "wb") as writer:
        while chunk := reader.read(1 << 22):
            writer.write(chunk)


@_translated
def walk_files(root: str) -> list[str]:
    """Paths of every file under `root`, relative to it with '/' separators, sorted ([] when there is none)."""
    root = str(root).rstrip("/")
    return sorted(_backend(root).find(root))


@_translated
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


@_translated
def remove_tree(path: str) -> None:
    """Delete a folder and everything in it (nothing when it does not exist)."""
    if exists(path):
        _backend(path).rmtree(_plain(path))


@_translated
def create_exclusive(path: str, data: bytes) -> None:
    """Write `data` to `path` only if nothing is there yet; AlreadyExistsError when something is.

    Atomic on the server for object stores and local files (see the module
    docstring); two writers racing for one name: one succeeds, the other gets
    AlreadyExistsError. ram:// (tf.io.gfile, in-process tests) has no such
    write: it checks, then writes.
    """
    path = str(path)
    makedirs(parent(path))
    if scheme(path) in GFILE_SCHEMES:
        if exists(path):
            raise AlreadyExistsError(f"{path} already exists")
        with open_file(path, "wb") as fh:
            fh.write(data)
        return
    fs = _checked_filesystem(path)
    _require_exclusive_writes(fs, path)
    try:
        fs.pipe_file(_plain(path), data, mode="create")
    except FileExistsError:
        raise AlreadyExistsError(f"{path} already exists") from None
    except OSError as exc:
        found = _client_error(exc)
        if found and found[0] in ("PreconditionFailed", "412"):  # s3fs versions that do not map 412
            raise AlreadyExistsError(f"{path} already exists") from None
        if found and found[0] == "ConditionalRequestConflict":  # S3: a concurrent conditional write won
            raise AlreadyExistsError(f"{path} is being created by another writer") from None
        raise


def _require_exclusive_writes(fs: Any, path: str) -> None:
    """PetsegError when the installed fsspec backend has no exclusive write (it would overwrite silently)."""
    import inspect

    writer = getattr(fs, "_pipe_file", None) or fs.pipe_file
    if "mode" not in inspect.signature(writer).parameters:
        extra = EXTRA_FOR_SCHEME.get(scheme(path))
        hint = f"pip install -U 'petseg[{extra}]'" if extra else "upgrade fsspec"
        raise PetsegError(
            f"{path}: the installed {type(fs).__module__.split('.')[0]} cannot create an object only if it is "
            f"absent (fsspec's mode='create'), which claiming a version needs; {hint}"
        )


@_translated
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

"""Before a step touches an object store: are its credentials there, and does the store take them?

A store step on Kubeflow gets its credentials from a Secret (contracts/object_store.py).
require_store_access looks first: a key the pipeline took from a Secret but left empty is
named with its Secret and key; then one probe of the store (storage.probe_store, the
store's one translation of faults into a line), to which a refused key's Secret and key
are added when the pipeline set them.

Local paths and memory:// need nothing. For gs:// only the key file is checked (a key
that GCS refuses shows on the first read, as gcsfs reports it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from petseg.components.contracts.object_store import (
    ACCESS_KEY_ENV,
    GCS_ENV,
    SECRET_KEY_ENV,
    SecretRef,
    read_sources,
)
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.store import storage

S3_SCHEMES = frozenset({"s3", "s3a"})
GCS_SCHEMES = frozenset({"gs", "gcs"})


def require_store_access(path: str, environ: Mapping[str, str] | None = None) -> None:
    """Return when `path`'s store can be reached with this environment's credentials; else PetsegError (one line)."""
    env = os.environ if environ is None else environ
    kind = storage.scheme(path)
    if kind in S3_SCHEMES:
        _require_s3(str(path), env)
    elif kind in GCS_SCHEMES:
        _require_gcs_key_file(env)


def _origin(name: str, sources: Mapping[str, SecretRef]) -> str:
    ref = sources.get(name)
    return f"from {ref}" if ref else "from the environment"


def _require_s3(path: str, env: Mapping[str, str]) -> None:
    sources = read_sources(env)
    for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV):
        if name in sources and not env.get(name):
            raise PetsegError(
                f"{name} is empty or not set; it comes from {sources[name]}: put the store's "
                f"{'access key id' if name == ACCESS_KEY_ENV else 'secret access key'} under that key"
            )
    given = [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if env.get(name)]
    if len(given) == 1:
        missing = SECRET_KEY_ENV if given == [ACCESS_KEY_ENV] else ACCESS_KEY_ENV
        raise PetsegError(f"{missing} is not set but {given[0]} is: set both, or neither to use the pod's identity")
    try:
        storage.probe_store(path)  # the store's one translation of its faults (components/store/storage.py)
    except storage.StoreError as exc:
        raise storage.StoreError(f"{exc}{_secret_origin(str(exc), sources)}") from None


def _secret_origin(line: str, sources: Mapping[str, SecretRef]) -> str:
    """'; here AWS_SECRET_ACCESS_KEY comes from Secret S key K' for a refused key the pipeline took from a Secret."""
    if "(SignatureDoesNotMatch)" in line:
        names = [SECRET_KEY_ENV]
    elif "(InvalidAccessKeyId)" in line or "access denied" in line or "access refused" in line:
        names = [ACCESS_KEY_ENV]
    else:
        return ""
    named = [f"{name} comes from {sources[name]}" for name in names if name in sources]
    return f"; here {' and '.join(named)}" if named else ""


def _require_gcs_key_file(env: Mapping[str, str]) -> None:
    sources = read_sources(env)
    key_file = env.get(GCS_ENV, "")
    if not key_file:
        if GCS_ENV in sources:
            raise PetsegError(f"{GCS_ENV} is empty or not set; it should name the key file from {sources[GCS_ENV]}")
        return  # the pod's own identity (Workload Identity, the metadata server)
    problem = _key_file_problem(key_file)
    if problem:
        raise PetsegError(
            f"{GCS_ENV} names {key_file}, which {problem}; the key file comes {_origin(GCS_ENV, sources)}: "
            "store a service-account key (JSON) there"
        )


def _key_file_problem(path: str) -> str | None:
    """Why `path` is not a Google credentials file, or None."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or first_line(exc)})"
    try:
        info = json.loads(data)
    except ValueError:
        return "is not JSON"
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        return 'is not a Google credentials file (no "type")'
    return None

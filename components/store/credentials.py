"""Before a step touches an object store: are its credentials there, and does the store take them?

A store step on Kubeflow gets its credentials from a Secret (contracts/object_store.py).
A key left empty, a key id the store does not know or a secret that does not match would
otherwise surface deep inside the step as "Forbidden". require_store_access looks first,
with one listing of the store's prefix, and ends a refusal in one line naming the
variable and, when the pipeline set it, the Secret and key it comes from.

Local paths and memory:// need nothing. For gs:// only the key file is checked (a key
that GCS refuses shows on the first read, as gcsfs reports it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from petseg.components.contracts.object_store import (
    ACCESS_KEY_ENV,
    ENDPOINT_ENVS,
    GCS_ENV,
    SECRET_KEY_ENV,
    SecretRef,
    read_sources,
)
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.store import storage

S3_SCHEMES = frozenset({"s3", "s3a"})
GCS_SCHEMES = frozenset({"gs", "gcs"})
# What an S3 permission the model store needs looks like in a policy (a refusal's message names them).
S3_ACTIONS = "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"


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


def s3_endpoint(env: Mapping[str, str]) -> str:
    """The S3 endpoint this environment points at, as a message shows it."""
    for name in ENDPOINT_ENVS:
        if env.get(name):
            return f"{env[name]} ({name})"
    return "AWS (no AWS_ENDPOINT_URL_S3)"


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
    bucket, _, prefix = path.split("://", 1)[1].partition("/")
    where = s3_endpoint(env)
    try:
        storage.filesystem(path).call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix.strip("/"), MaxKeys=1)
    except FileNotFoundError:
        raise PetsegError(f"bucket {bucket} does not exist at {where}; create it, or fix the path {path}") from None
    except PermissionError as exc:
        raise PetsegError(_refusal(exc, path, where, sources)) from None
    except Exception as exc:
        kind = type(exc).__name__
        if kind in ("NoCredentialsError", "PartialCredentialsError"):
            raise PetsegError(
                f"no S3 credentials for {path}: {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} are not set and the pod "
                "has no identity; on Kubeflow set pipeline.object_store.secret (the in-cluster store's: "
                "mlpipeline-minio-artifact)"
            ) from None
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            raise PetsegError(
                f"cannot reach the S3 endpoint {where} for {path} ({first_line(exc)}); check "
                "pipeline.object_store.endpoint and that the store is running"
            ) from None
        raise


def _refusal(exc: PermissionError, path: str, where: str, sources: Mapping[str, SecretRef]) -> str:
    """The one line for a store that refused these credentials, naming the variable to fix."""
    code = _error_code(exc)
    if code == "InvalidAccessKeyId":
        return (
            f"{ACCESS_KEY_ENV} is not an access key id the S3 store at {where} knows (InvalidAccessKeyId); "
            f"it comes {_origin(ACCESS_KEY_ENV, sources)}: put the store's access key id there"
        )
    if code == "SignatureDoesNotMatch":
        return (
            f"{SECRET_KEY_ENV} is not the secret of {ACCESS_KEY_ENV} at the S3 store at {where} "
            f"(SignatureDoesNotMatch); it comes {_origin(SECRET_KEY_ENV, sources)}: put that key's secret there"
        )
    return (
        f"the S3 store at {where} refused to list {path} to the key {ACCESS_KEY_ENV} "
        f"({_origin(ACCESS_KEY_ENV, sources)}): {code or first_line(exc)}; grant it {S3_ACTIONS} on the bucket"
    )


def _error_code(exc: BaseException) -> str:
    """The S3 error code (InvalidAccessKeyId, AccessDenied...) botocore reported under s3fs' exception, or ""."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


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

"""How object-store credentials reach a pod: the environment a store step, TF Serving's mirror and KServe get.

One contract, three readers. The compiled pipeline (pipeline/store_credentials.py)
gives exactly this environment to the steps that touch the model store; the
steps check it first thing (components/store/credentials.py) and name the
Secret a missing or wrong value comes from; the deploy files and the KServe
ServiceAccount are generated from the same `pipeline.object_store` settings.

S3 (s3fs, through botocore's own environment variables):

- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: from Secret `secret`, keys `keys.*`
  (Kubeflow's `mlpipeline-minio-artifact`: `accesskey`, `secretkey`).
- AWS_ENDPOINT_URL_S3: `endpoint` (botocore >= 1.31 reads it; the S3-only form,
  so no other AWS service a library might call is sent to MinIO).
- AWS_DEFAULT_REGION and AWS_REGION: `region`, when set.

GCS (gcsfs, through google-auth's application default credentials):

- Secret `gcs_secret` mounted at GCS_MOUNT_PATH, and GOOGLE_APPLICATION_CREDENTIALS
  naming its key file `gcs_key`.

SOURCES_ENV carries, as JSON, which Secret and key each variable comes from,
so a step that finds one empty or refused can say where to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import KServeParams, ObjectStoreParams

ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
# Other names botocore takes an endpoint from (the first wins): what a message names as the one set.
ENDPOINT_ENVS = (ENDPOINT_ENV, "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_DEFAULT_REGION", "AWS_REGION")
GCS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
GCS_MOUNT_PATH = "/var/secrets/petseg-gcs"
SOURCES_ENV = "PETSEG_STORE_CREDENTIALS"

# KServe v0.20.0: the data keys its stock inferenceservice-config (credentials.s3.s3AccessKeyIDName,
# s3SecretAccessKeyName) makes the storage initializer read, and the Secret annotations it turns into
# S3_ENDPOINT / AWS_ENDPOINT_URL, S3_USE_HTTPS and AWS_DEFAULT_REGION (pkg/credentials/s3/s3_secret.go).
KSERVE_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
KSERVE_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
KSERVE_ENDPOINT_ANNOTATION = "serving.kserve.io/s3-endpoint"
KSERVE_USEHTTPS_ANNOTATION = "serving.kserve.io/s3-usehttps"
KSERVE_REGION_ANNOTATION = "serving.kserve.io/s3-region"
# The GCS key file name KServe's storage initializer looks for (credentials.gcs.gcsCredentialFileName).
KSERVE_GCS_KEY = "gcloud-application-credentials.json"


@dataclass(frozen=True)
class SecretRef:
    """One key of one Secret."""

    secret: str
    key: str

    def __str__(self) -> str:
        return f"Secret {self.secret} key {self.key}"


@dataclass(frozen=True)
class StoreEnv:
    """What a pod that touches the store gets: variables from Secret keys, plain variables, mounted Secrets."""

    from_secrets: dict[str, SecretRef] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # Secret name -> mount path

    @property
    def empty(self) -> bool:
        return not (self.from_secrets or self.values or self.mounts)


def store_env(settings: ObjectStoreParams) -> StoreEnv:
    """The environment `settings` give a pod that touches the store (nothing when every Secret is "")."""
    from_secrets: dict[str, SecretRef] = {}
    values: dict[str, str] = {}
    mounts: dict[str, str] = {}
    if settings.secret:
        from_secrets[ACCESS_KEY_ENV] = SecretRef(settings.secret, settings.keys.access_key_id)
        from_secrets[SECRET_KEY_ENV] = SecretRef(settings.secret, settings.keys.secret_access_key)
    if settings.endpoint:
        values[ENDPOINT_ENV] = settings.endpoint.rstrip("/")
    if settings.region:
        values.update(dict.fromkeys(REGION_ENVS, settings.region))
    sources = dict(from_secrets)
    if settings.gcs_secret:
        mounts[settings.gcs_secret] = GCS_MOUNT_PATH
        values[GCS_ENV] = f"{GCS_MOUNT_PATH}/{settings.gcs_key}"
        sources[GCS_ENV] = SecretRef(settings.gcs_secret, settings.gcs_key)
    if sources:
        values[SOURCES_ENV] = json.dumps(
            {name: {"secret": ref.secret, "key": ref.key} for name, ref in sources.items()}, sort_keys=True
        )
    return StoreEnv(from_secrets, values, mounts)


def read_sources(environ: Mapping[str, str]) -> dict[str, SecretRef]:
    """{variable: the Secret key it comes from} as SOURCES_ENV declares it ({} when unset)."""
    text = environ.get(SOURCES_ENV, "")
    if not text:
        return {}
    try:
        raw = json.loads(text)
        return {str(name): SecretRef(str(ref["secret"]), str(ref["key"])) for name, ref in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PetsegError(
            f'{SOURCES_ENV} is not JSON of the form {{"VARIABLE": {{"secret": ..., "key": ...}}}}; '
            "it is set by the compiled pipeline: unset it or compile again"
        ) from None


def endpoint_host(endpoint: str) -> tuple[str, bool]:
    """(host[:port], uses https) of an endpoint URL as params.py accepts it."""
    parts = urlsplit(endpoint)
    return parts.netloc, parts.scheme == "https"


# ------------------------------------------------------------------- KServe
def kserve_s3_secret_metadata(settings: ObjectStoreParams, namespace: str) -> dict:
    """The metadata of the Secret KServe's storage initializer reads S3 keys from, annotated from `settings`.

    Annotations (KServe v0.20.0 pkg/credentials/s3/s3_secret.go): s3-endpoint is host[:port]
    with s3-usehttps "0"/"1" (KServe's documented form), s3-region when set. No endpoint: AWS.
    """
    annotations: dict[str, str] = {}
    if settings.endpoint:
        host, https = endpoint_host(settings.endpoint)
        annotations[KSERVE_ENDPOINT_ANNOTATION] = host
        annotations[KSERVE_USEHTTPS_ANNOTATION] = "1" if https else "0"
    if settings.region:
        annotations[KSERVE_REGION_ANNOTATION] = settings.region
    metadata: dict = {
        "name": settings.kserve_secret,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "petseg-kserve"},
    }
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def kserve_s3_secret(settings: ObjectStoreParams, namespace: str, access_key_id: str, secret_access_key: str) -> dict:
    """The Secret for KServe, holding these keys under the names KServe reads (see kserve_s3_secret_metadata)."""
    for name, value in ((ACCESS_KEY_ENV, access_key_id), (SECRET_KEY_ENV, secret_access_key)):
        if not value:
            raise PetsegError(f"{name} is empty: the KServe Secret needs the store's {name}")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": kserve_s3_secret_metadata(settings, namespace),
        "type": "Opaque",
        "stringData": {KSERVE_ACCESS_KEY: access_key_id, KSERVE_SECRET_KEY: secret_access_key},
    }


def kserve_credential_secrets(settings: ObjectStoreParams) -> list[str]:
    """The Secrets the predictor's ServiceAccount lists, in order: S3's for KServe, then the GCS key file's.

    KServe fails the predictor pod when a listed Secret does not exist, so only configured ones are listed.
    """
    names = []
    if settings.secret:
        names.append(settings.kserve_secret)
    if settings.gcs_secret:
        if settings.gcs_key != KSERVE_GCS_KEY:
            raise PetsegError(
                f"pipeline.object_store.gcs_key is {settings.gcs_key!r}, but KServe's storage initializer reads "
                f"the key file from key {KSERVE_GCS_KEY}: set gcs_key to that and store the file under it"
            )
        names.append(settings.gcs_secret)
    return names


def kserve_service_account(settings: ObjectStoreParams, kserve: KServeParams) -> dict:
    """The predictor pods' ServiceAccount: it lists the Secrets KServe reads the store's credentials from."""
    account: dict = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": kserve.service_account,
            "namespace": kserve.namespace,
            "labels": {"app.kubernetes.io/name": "petseg-kserve"},
        },
        "automountServiceAccountToken": False,
    }
    secrets = kserve_credential_secrets(settings)
    if secrets:
        account["secrets"] = [{"name": name} for name in secrets]
    return account

"""Serve the pushed model through KServe: the InferenceService, its canary rollout, and rollback.

KServe's TensorFlow runtime (ClusterServingRuntime `kserve-tensorflow-serving`)
runs `tensorflow_model_server --model_name=<InferenceService name>
--port=9000 --rest_api_port=8080 --model_base_path=/mnt/models`, after its
storage initializer has copied `storageUri` to /mnt/models. storageUri is
therefore push's model folder, `<push.model_base_path>/<push.model_name>`, in
TF Serving's own `<version>/saved_model.pb` layout, and the InferenceService is
named after the model so that clients ask for `push.model_name` as they do of
the plain TF Serving Deployment. TF Serving's default version policy applies:
each pod serves the newest version it copied; models.config is not read.

A rollout is a new Knative revision. Changing only traffic settings makes none,
so every deploy stamps the version it rolls out into the predictor's
annotations (VERSION_ANNOTATION): a new version gives a new revision, which
copies storageUri afresh and so serves that version. The rollout is KServe's
canary: the new revision gets `canaryTrafficPercent` of the traffic and the
last rolled-out revision the rest; once the new revision is Ready it is
promoted to 100%. If it is not Ready within the timeout, `canaryTrafficPercent: 0`
pins all traffic to the previously rolled-out revision (KServe's own rollback)
and the step fails in one line.

Everything here is a plain function over a `kubernetes.client.CustomObjectsApi`,
so tests can read the exact requests (method, path, content type, body) the
Kubernetes client would send.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.params import KServeParams, PipelineParams, PushParams, ServeParams

GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
# The kserve-tensorflow-serving runtime's own flags: --port (gRPC) and --rest_api_port.
RUNTIME_GRPC_PORT = 9000
RUNTIME_REST_PORT = 8080
# Knative routes one port per revision and knows its protocol by the port's name.
PORTS = {
    "grpc": {"name": "h2c", "containerPort": RUNTIME_GRPC_PORT, "protocol": "TCP"},
    "rest": {"name": "http1", "containerPort": RUNTIME_REST_PORT, "protocol": "TCP"},
}
PROTOCOL_VERSIONS = {"grpc": "grpc-v1", "rest": "v1"}
VERSION_ANNOTATION = "petseg.io/model-version"
# Canary rollout exists only in KServe's Serverless (Knative) mode.
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# storageUri schemes KServe's storage initializer reads.
STORAGE_SCHEMES = ("gs", "s3", "pvc", "hdfs", "webhdfs", "https", "oci")
MIB = 2**20


class KServeError(PetsegError):
    """The InferenceService could not be deployed, rolled out or rolled back; the message says why."""


@dataclass(frozen=True)
class DeployResult:
    """status: "created", "promoted" (canary Ready, now 100%) or "unchanged" (this version already deployed)."""

    status: str
    name: str
    namespace: str
    version: int
    revision: str | None = None
    previous_revision: str | None = None


@dataclass(frozen=True)
class RollbackResult:
    """Traffic moved from `from_revision` to `to_revision`, the revision rolled out before it."""

    name: str
    namespace: str
    to_revision: str
    from_revision: str | None


# ------------------------------------------------------------------- the manifest
def storage_uri(push: PushParams, pipeline: PipelineParams) -> str:
    """Where KServe's storage initializer reads the model folder push writes.

    An object-store model_base_path is used as it is; a model_base_path on
    the pipeline's serving PVC becomes `pvc://<claim>/<path in the claim>`.
    A path only one machine sees cannot be read by the cluster: ParamsError.
    """
    base = push.model_base_path.rstrip("/")
    if "://" in base:
        scheme = base.split("://", 1)[0]
        if scheme not in STORAGE_SCHEMES:
            raise ParamsError(
                f"push.model_base_path {base!r}: KServe's storage initializer does not read "
                f"{scheme}:// (use one of {', '.join(s + '://' for s in STORAGE_SCHEMES)})"
            )
        return f"{base}/{push.model_name}"
    if pipeline.serving_pvc:
        mount = pipeline.serving_mount_path.rstrip("/")
        if not (base == mount or base.startswith(mount + "/")):
            raise ParamsError(
                f"push.model_base_path ({base}) must lie under pipeline.serving_mount_path "
                f"({pipeline.serving_mount_path}) for KServe to read it from pipeline.serving_pvc"
            )
        inside = base[len(mount) :].strip("/")
        return f"pvc://{pipeline.serving_pvc}/" + "/".join(p for p in (inside, push.model_name) if p)
    raise ParamsError(
        f"pipeline.deploy: kserve needs push.model_base_path to be an object-store URI "
        f"(gs://, s3://) or pipeline.serving_pvc to be set; {base!r} is a path only one "
        "machine sees, which KServe cannot read"
    )


def inference_service(
    push: PushParams, serve: ServeParams, pipeline: PipelineParams, version: int | None = None
) -> dict[str, Any]:
    """The InferenceService body for params; with `version`, stamped so that it makes a new revision."""
    settings = pipeline.kserve
    limit = serve.max_message_mb * MIB
    predictor: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "model": {
            "modelFormat": {"name": "tensorflow"},
            "protocolVersion": PROTOCOL_VERSIONS[settings.protocol],
            "storageUri": storage_uri(push, pipeline),
            # Appended to the runtime's flags: the same message limits as the plain Deployment.
            "args": [
                f"--grpc_channel_arguments=grpc.max_send_message_length={limit},grpc.max_receive_message_length={limit}"
            ],
            "ports": [dict(PORTS[settings.protocol])],
            "resources": {
                "requests": {"cpu": settings.resources.cpu_request, "memory": settings.resources.memory_request},
                "limits": {"cpu": settings.resources.cpu_limit, "memory": settings.resources.memory_limit},
            },
        },
    }
    if version is not None:
        predictor["annotations"] = {VERSION_ANNOTATION: str(version)}
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": push.model_name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/name": f"{push.model_name}-kserve", "app.kubernetes.io/part-of": "petseg"},
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: "Serverless"},
        },
        "spec": {"predictor": predictor},
    }


def check_deploy_settings(params: Any) -> None:
    """Raise ParamsError when `pipeline.deploy` asks for a rollout these params cannot make."""
    if params.pipeline.deploy == "kserve":
        storage_uri(params.push, params.pipeline)


# ------------------------------------------------------------------ status reading
def _predictor_status(isvc: dict) -> dict:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def _ready_condition(isvc: dict) -> dict:
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return {}


def deployed_version(isvc: dict) -> int | None:
    """The model version last stamped on the InferenceService's predictor, if any."""
    value = ((isvc.get("spec") or {}).get("predictor") or {}).get("annotations", {}).get(VERSION_ANNOTATION)
    return int(value) if value is not None and str(value).isdecimal() else None


def new_revision_ready(isvc: dict, generation: int, old_revision: str | None) -> bool:
    """Whether KServe has seen `generation` and its newest revision (not `old_revision`) is Ready."""
    status = isvc.get("status") or {}
    predictor = _predictor_status(isvc)
    latest = predictor.get("latestReadyRevision")
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and _ready_condition(isvc).get("status") == "True"
        and latest is not None
        and latest == predictor.get("latestCreatedRevision")
        and latest != old_revision
    )


def rollback_target(isvc: dict) -> str | None:
    """The revision `canaryTrafficPercent: 0` leaves all traffic on, following KServe's status rules.

    KServe splits traffic between the newest ready revision (the canary share)
    and `latestRolledoutRevision` (the rest). While a canary is on, or a new
    revision never became Ready, that is the revision rolled out last. Once the
    newest revision is itself rolled out (promoted, and no newer one created),
    a canary share below 100 makes KServe step `latestRolledoutRevision` back to
    `previousRolledoutRevision`, so that one gets the traffic.
    """
    predictor = _predictor_status(isvc)
    rolled_out = predictor.get("latestRolledoutRevision")
    ready, created = predictor.get("latestReadyRevision"), predictor.get("latestCreatedRevision")
    if rolled_out and rolled_out == ready and ready == created:
        return predictor.get("previousRolledoutRevision") or None
    return rolled_out or None


# ------------------------------------------------------------------- the requests
def canary_patch(percent: int) -> dict:
    """The merge patch that sets the predictor's canary traffic share (0 = all to the rolled-out revision)."""
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def with_canary(body: dict, percent: int) -> dict:
    """A copy of `body` whose predictor gets `percent` of the traffic while the previous revision keeps the rest."""
    staged = copy.deepcopy(body)
    staged["spec"]["predictor"]["canaryTrafficPercent"] = percent
    return staged


def _api_error(what: str, namespace: str, name: str, exc: Any) -> KServeError:
    """One line for an API error, with the likely fix for a refusal or a missing CRD."""
    hint = ""
    if exc.status == 403:
        hint = f"; the deploying account needs the Role in serving/deploy/kserve/rbac.yaml in {namespace}"
    elif exc.status == 404:
        hint = "; is KServe installed (the InferenceService CRD)?"
    return KServeError(f"{what} InferenceService {namespace}/{name}: HTTP {exc.status} {exc.reason}{hint}")


def _call(what: str, name: str, namespace: str, request: Callable[[], dict]) -> dict:
    """Send one request; an API error becomes a KServeError naming what was asked and why it failed."""
    from kubernetes.client.exceptions import ApiException

    try:
        return request()
    except ApiException as exc:
        raise _api_error(what, namespace, name, exc) from None


def get_inference_service(api: Any, namespace: str, name: str) -> dict | None:
    """The InferenceService as the API server has it, or None if there is none."""
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        # The API server answers a missing object with a Status whose reason is NotFound; a missing
        # CRD (no KServe) with a bare 404 page.
        if exc.status == 404 and '"NotFound"' in str(exc.body or ""):
            return None
        raise _api_error("read", namespace, name, exc) from None


def _patch(api: Any, namespace: str, name: str, body: dict) -> dict:
    return _call(
        "patch",
        name,
        namespace,
        lambda: api.patch_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name, body),
    )


def wait_until_ready(
    api: Any,
    namespace: str,
    name: str,
    generation: int,
    old_revision: str | None,
    timeout_seconds: float,
    poll_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict | str:
    """Poll until a new revision is Ready: the InferenceService then, or the last reason it was not."""
    deadline = clock() + timeout_seconds
    while True:
        isvc = get_inference_service(api, namespace, name) or {}
        if new_revision_ready(isvc, generation, old_revision):
            return isvc
        condition = _ready_condition(isvc)
        reason = condition.get("message") or condition.get("reason") or "no Ready condition yet"
        if clock() >= deadline:
            return reason
        sleep(poll_seconds)


# ----------------------------------------------------------------------- the step
def deploy(
    api: Any,
    body: dict,
    settings: KServeParams,
    version: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> DeployResult:
    """Create the InferenceService, or roll `version` out on it: canary, wait for Ready, promote to 100%.

    A new revision that is not Ready within `settings.ready_timeout_seconds`
    gets no traffic (canaryTrafficPercent 0 pins it all to the revision rolled
    out before) and KServeError says so in one line.
    """
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    wait: dict[str, Any] = dict(
        timeout_seconds=settings.ready_timeout_seconds, poll_seconds=settings.poll_seconds, sleep=sleep, clock=clock
    )
    existing = get_inference_service(api, namespace, name)
    if existing is None:
        log(f"deploy: creating InferenceService {namespace}/{name} (version {version})")
        created = _call(
            "create",
            name,
            namespace,
            lambda: api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, body),
        )
        outcome = wait_until_ready(api, namespace, name, int(created["metadata"].get("generation", 1)), None, **wait)
        if isinstance(outcome, str):
            raise KServeError(
                f"InferenceService {namespace}/{name} (version {version}) was not Ready within "
                f"{settings.ready_timeout_seconds:g}s: {outcome}; no earlier revision to fall back to"
            )
        return DeployResult("created", name, namespace, version, _predictor_status(outcome).get("latestReadyRevision"))

    if deployed_version(existing) == version:
        predictor = _predictor_status(existing)
        if _ready_condition(existing).get("status") != "True" or predictor.get("latestReadyRevision") != predictor.get(
            "latestCreatedRevision"
        ):
            condition = _ready_condition(existing)
            raise KServeError(
                f"version {version} is already on InferenceService {namespace}/{name} but its "
                f"revision is not Ready ({condition.get('message') or 'no Ready condition'}); "
                "fix that, or push a new version to roll out"
            )
        log(f"deploy: {namespace}/{name} already rolls out version {version}; nothing to do")
        return DeployResult("unchanged", name, namespace, version, predictor.get("latestReadyRevision"))
    old_revision = _predictor_status(existing).get("latestReadyRevision")
    percent = settings.canary_traffic_percent
    log(f"deploy: rolling out version {version} on {namespace}/{name} with {percent}% of the traffic")
    patched = _patch(api, namespace, name, with_canary(body, percent))
    outcome = wait_until_ready(
        api, namespace, name, int(patched["metadata"].get("generation", 0)), old_revision, **wait
    )
    if isinstance(outcome, str):
        late = get_inference_service(api, namespace, name) or existing
        target = rollback_target(late)
        if target is None:
            raise KServeError(
                f"version {version} on InferenceService {namespace}/{name} was not Ready within "
                f"{settings.ready_timeout_seconds:g}s ({outcome}); it has no earlier rolled-out "
                "revision to send traffic back to"
            )
        _patch(api, namespace, name, canary_patch(0))
        raise KServeError(
            f"version {version} on InferenceService {namespace}/{name} was not Ready within "
            f"{settings.ready_timeout_seconds:g}s ({outcome}); all traffic rolled back to {target}"
        )
    revision = _predictor_status(outcome).get("latestReadyRevision")
    if percent < 100:
        log(f"deploy: {revision} is Ready; promoting it to 100% of the traffic")
        _patch(api, namespace, name, canary_patch(100))
    return DeployResult("promoted", name, namespace, version, revision, old_revision)


def rollback_traffic(api: Any, namespace: str, name: str) -> RollbackResult:
    """Send all traffic back to the revision rolled out before the newest one (canaryTrafficPercent 0)."""
    isvc = get_inference_service(api, namespace, name)
    if isvc is None:
        raise KServeError(
            f"no InferenceService {namespace}/{name} to roll back (check pipeline.kserve.namespace and push.model_name)"
        )
    target = rollback_target(isvc)
    if target is None:
        raise KServeError(
            f"InferenceService {namespace}/{name} has no earlier rolled-out revision to send traffic back to"
        )
    _patch(api, namespace, name, canary_patch(0))
    return RollbackResult(name, namespace, target, _predictor_status(isvc).get("latestReadyRevision"))


def custom_objects_api() -> Any:
    """A CustomObjectsApi from the pod's service account, else from kubeconfig; KServeError if neither works."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise KServeError(
                f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc}); "
                "set KUBECONFIG or run `kubectl config use-context`"
            ) from None
    return client.CustomObjectsApi()

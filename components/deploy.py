"""Serve the pushed model through KServe: the InferenceService, its canary rollout, and rollback, in both modes.

KServe's TensorFlow runtime (ClusterServingRuntime `kserve-tensorflow-serving`)
runs `tensorflow_model_server --model_name=<InferenceService name>
--port=9000 --rest_api_port=8080 --model_base_path=/mnt/models`, after its
storage initializer has copied `storageUri` to /mnt/models. storageUri is
therefore push's model folder, `<push.model_base_path>/<push.model_name>`, in
TF Serving's own `<version>/saved_model.pb` layout, and the InferenceService is
named after the model so that clients ask for `push.model_name` as they do of
the plain TF Serving Deployment. TF Serving's default version policy applies:
each pod serves the newest version it copied; models.config is not read. The
runtime's image tag is the stock 2.6.2 unless `runtimeVersion` says otherwise
(kserve/kserve v0.20.0 config/runtimes/kustomization.yaml), so every body sets
it to TF_SERVING_VERSION (components/contracts/serving_runtime.py).

KServe has two deployment modes (v0.20.0 pkg/constants/constants.go: `Knative`
and `Standard`; `Serverless` and `RawDeployment` are deprecated aliases that
its webhook rewrites). `pipeline.kserve.mode` picks one and every body carries
it in the `serving.kserve.io/deploymentMode` annotation, which wins over the
cluster's default (pkg/controller/v1beta1/inferenceservice/utils/utils.go,
`GetDeploymentMode`). KServe refuses to change the mode of an existing
InferenceService (inference_service_validation.go, `validateDeploymentMode`),
so the step reads the live one first and stops in one line when it differs.

Knative mode. A rollout is a new Knative revision. Changing only traffic
settings makes none, so every deploy stamps the version it rolls out into the
predictor's annotations (VERSION_ANNOTATION): a new version gives a new
revision, which copies storageUri afresh and so serves that version. The new
revision gets `canaryTrafficPercent` of the traffic and the last rolled-out
revision the rest; once the new revision is Ready it is promoted to 100%. If it
is not Ready within the timeout, `canaryTrafficPercent: 0` pins all traffic to
the previously rolled-out revision (KServe's own rollback) and the step fails
in one line. `canaryTrafficPercent` is read only by the Knative reconciler.

Standard mode (KServe >= v0.20.0, `spec.canary[]`; see the "Standard mode"
section below for the rules and their source files).

Everything here is a plain function over a `kubernetes.client.CustomObjectsApi`,
so tests can read the exact requests (method, path, content type, body) the
Kubernetes client would send.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION
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
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# pipeline.kserve.mode -> KServe's mode name (v0.20.0 pkg/constants/constants.go, DeploymentModeType).
MODE_NAMES = {"knative": "Knative", "standard": "Standard"}
# The deprecated names KServe still accepts and rewrites (same file: LegacyServerless, LegacyRawDeployment).
LEGACY_MODE_NAMES = {"Serverless": "Knative", "RawDeployment": "Standard"}
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
    """Traffic moved from `from_revision` to `to_revision`; `how` says what the patch changed."""

    name: str
    namespace: str
    to_revision: str
    from_revision: str | None
    how: str = "canaryTrafficPercent is 0"


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
            # The runtime's image tag (stock: 2.6.2); the same release as the Deployment and compose.
            "runtimeVersion": TF_SERVING_VERSION,
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
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: MODE_NAMES[settings.mode]},
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


def wait_until(
    api: Any,
    namespace: str,
    name: str,
    ready: Callable[[dict], bool],
    mode: str,
    timeout_seconds: float,
    poll_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict | str:
    """Poll until `ready(isvc)`: the InferenceService then, or the last reason it was not.

    KServeError at once when KServe reports running it in another mode than `mode`
    (`status.deploymentMode`): a KServe that does not know the mode name falls back
    to the cluster's default (utils.go `GetDeploymentMode`), and waiting is then pointless.
    """
    deadline = clock() + timeout_seconds
    while True:
        isvc = get_inference_service(api, namespace, name) or {}
        check_reported_mode(isvc, mode)
        if ready(isvc):
            return isvc
        condition = _ready_condition(isvc)
        reason = condition.get("message") or condition.get("reason") or "no Ready condition yet"
        if clock() >= deadline:
            return reason
        sleep(poll_seconds)


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
    """Knative: poll until a new revision is Ready: the InferenceService then, or the last reason it was not."""
    return wait_until(
        api,
        namespace,
        name,
        lambda isvc: new_revision_ready(isvc, generation, old_revision),
        "knative",
        timeout_seconds,
        poll_seconds,
        sleep=sleep,
        clock=clock,
    )


# ------------------------------------------------------------------- the mode
def kserve_mode(value: str | None) -> str | None:
    """pipeline.kserve.mode for a KServe mode name (deprecated aliases included); None for none or another."""
    name = LEGACY_MODE_NAMES.get(value or "", value)
    return next((mode for mode, known in MODE_NAMES.items() if known == name), None)


def live_mode(isvc: dict) -> str | None:
    """The mode an existing InferenceService runs in: KServe's status first, then its annotation (utils.go order)."""
    reported = (isvc.get("status") or {}).get("deploymentMode")
    annotated = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    return kserve_mode(reported) or kserve_mode(annotated)


def check_reported_mode(isvc: dict, mode: str) -> None:
    """KServeError when KServe's `status.deploymentMode` names another mode than `mode`."""
    reported = (isvc.get("status") or {}).get("deploymentMode")
    if reported and kserve_mode(reported) != mode:
        meta = isvc.get("metadata") or {}
        raise KServeError(
            f"KServe runs InferenceService {meta.get('namespace')}/{meta.get('name')} in {reported} mode, not "
            f"{MODE_NAMES[mode]} as its {DEPLOYMENT_MODE_ANNOTATION} annotation asks: this KServe does not know "
            f"the mode name {MODE_NAMES[mode]!r} (KServe < 0.16) or lacks what the mode needs; upgrade KServe, "
            f"or set pipeline.kserve.mode: {kserve_mode(reported) or 'knative'}"
        )


def check_same_mode(existing: dict, mode: str) -> None:
    """KServeError when the live InferenceService runs in the other mode: KServe rejects changing it."""
    found = live_mode(existing)
    if found is not None and found != mode:
        meta = existing.get("metadata") or {}
        raise KServeError(
            f"InferenceService {meta.get('namespace')}/{meta.get('name')} runs in {MODE_NAMES[found]} mode but "
            f"pipeline.kserve.mode is {mode}, and KServe refuses to change an InferenceService's mode; set "
            f"pipeline.kserve.mode: {found}, or delete the InferenceService to recreate it in {MODE_NAMES[mode]} mode"
        )


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
    """Create the InferenceService, or roll `version` out on it the way `settings.mode` does it.

    Knative: canary revision, wait for Ready, promote to 100%; a new revision not
    Ready within `settings.ready_timeout_seconds` gets no traffic
    (canaryTrafficPercent 0). Standard: see deploy_standard. Either way a failure
    is one line of KServeError.
    """
    if settings.mode == "standard":
        return deploy_standard(api, body, settings, version, sleep=sleep, clock=clock, log=log)
    return deploy_knative(api, body, settings, version, sleep=sleep, clock=clock, log=log)


def _create(
    api: Any, body: dict, settings: KServeParams, version: int, ready: Callable[[int], Callable[[dict], bool]], **wait
) -> dict:
    """POST the InferenceService and wait until `ready(generation)` holds; KServeError if not in time."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    created = _call(
        "create",
        name,
        namespace,
        lambda: api.create_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, body),
    )
    generation = int(created["metadata"].get("generation", 1))
    outcome = wait_until(api, namespace, name, ready(generation), settings.mode, **wait)
    if isinstance(outcome, str):
        raise KServeError(
            f"InferenceService {namespace}/{name} (version {version}) was not Ready within "
            f"{settings.ready_timeout_seconds:g}s: {outcome}; no earlier revision to fall back to"
        )
    return outcome


def deploy_knative(
    api: Any,
    body: dict,
    settings: KServeParams,
    version: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> DeployResult:
    """Knative mode: create, or canary the new revision at canaryTrafficPercent, wait for Ready, promote to 100%."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    wait: dict[str, Any] = dict(
        timeout_seconds=settings.ready_timeout_seconds, poll_seconds=settings.poll_seconds, sleep=sleep, clock=clock
    )
    existing = get_inference_service(api, namespace, name)
    if existing is None:
        log(f"deploy: creating InferenceService {namespace}/{name} (version {version}, Knative mode)")
        ready = _create(api, body, settings, version, lambda gen: lambda i: new_revision_ready(i, gen, None), **wait)
        return DeployResult("created", name, namespace, version, _predictor_status(ready).get("latestReadyRevision"))

    check_same_mode(existing, "knative")
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


# ------------------------------------------------------------ Standard mode: spec.canary (KServe >= 0.20)
# The rules below were read in kserve/kserve at v0.20.0:
# - pkg/apis/serving/v1beta1/inference_service.go: `spec.canary[]` = {predictor, trafficPercent 0..100}; a canary's
#   predictor.name names its Deployment and Service `{isvc}-{name}-predictor` (pkg/constants/constants.go
#   PredictorServiceName).
# - pkg/apis/serving/v1beta1/inference_service_validation.go, validateCanarySpecs: only with the annotation
#   `Standard`; the stable predictor has a model; each canary has a name unlike the stable one's, exactly one
#   implementation, no maxReplicas/scaleTarget/scaleMetric/autoScaling/workerSpec; trafficPercent sum <= 100.
#   validatePredictorNameChange: renaming the stable predictor needs a new storageUri. Ours stays
#   `<base>/<model>` for every version (TF Serving's layout), so promotion keeps the stable predictor's
#   name and rolls its Deployment to the new version instead of adopting the canary's Deployment.
# - pkg/controller/v1beta1/inferenceservice/components/predictor.go: the canary is the stable predictor merged
#   with the canary's (buildCanaryPredictor), with ceil(stable minReplicas x trafficPercent / 100) fixed replicas
#   (canaryReplicaCount); `status.canaryStatuses[].ready` is its Deployment having an available replica;
#   removing the entry deletes the canary's Deployment and Service (the orphan clean-up in
#   reconcileCanaryDeployments). Predictor annotations reach the pod template (buildObjectMeta,
#   reconcilers/deployment/deployment_reconciler.go), so a new VERSION_ANNOTATION rolls the stable Deployment,
#   whose new pods copy storageUri afresh and serve the newest version.
CRD_NAME = f"{PLURAL}.{GROUP}"
RUNTIME_CONTAINER = "kserve-container"
CANARY_SINCE = "v0.20.0"  # the first KServe tag with spec.canary (commit 43ec86b5e, #5672)


def canary_name(version: int) -> str:
    """The canary predictor's name for a version: a DNS label, as predictor.name's pattern requires."""
    return f"v{version}"


def predictor_deployment(isvc_name: str, predictor_name: str | None = None) -> str:
    """The Deployment (and Service) KServe names for a predictor: constants.go PredictorServiceName."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def standard_canary_patch(body: dict, version: int, percent: int) -> dict:
    """The merge patch that starts `version` as the one canary: its name, version stamp and model, no scaling."""
    model = copy.deepcopy(body["spec"]["predictor"]["model"])
    # The v0.20.0 CRD requires `name` (the inline container's) in a canary's model, unlike the stable one's;
    # KServe's runtime container is kserve-container (constants.go InferenceServiceContainerName).
    model["name"] = RUNTIME_CONTAINER
    canary = {"name": canary_name(version), "annotations": {VERSION_ANNOTATION: str(version)}, "model": model}
    return {"spec": {"canary": [{"predictor": canary, "trafficPercent": percent}]}}


def standard_promote_patch(body: dict) -> dict:
    """The merge patch that makes the stable predictor `body`'s (the new version) and removes the canary."""
    return {"spec": {"predictor": copy.deepcopy(body["spec"]["predictor"]), "canary": None}}


def remove_canary_patch() -> dict:
    """The merge patch that removes every canary: KServe deletes their Deployments; the stable one is untouched."""
    return {"spec": {"canary": None}}


def stable_ready(isvc: dict, generation: int) -> bool:
    """Whether KServe has seen `generation` and the InferenceService is Ready."""
    status = isvc.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= generation and _ready_condition(isvc).get("status") == "True"


def canary_ready(isvc: dict, generation: int, name: str) -> bool:
    """Whether KServe has seen `generation` and reports the canary `name` ready (status.canaryStatuses)."""
    status = isvc.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= generation and any(
        entry.get("name") == name and entry.get("ready") is True for entry in status.get("canaryStatuses") or []
    )


def check_canary_support(api: Any) -> None:
    """KServeError unless the cluster's InferenceService CRD has `spec.canary` (KServe >= v0.20.0).

    KServe exposes no version field, so this reads what decides the question: the
    CRD's v1beta1 schema (GET apiextensions.k8s.io/v1 customresourcedefinitions/
    inferenceservices.serving.kserve.io; serving/deploy/kserve/rbac.yaml grants that one read).
    """
    from kubernetes.client import ApiextensionsV1Api
    from kubernetes.client.exceptions import ApiException

    try:
        crd = ApiextensionsV1Api(api.api_client).read_custom_resource_definition(CRD_NAME, _preload_content=False)
    except ApiException as exc:
        hint = ""
        if exc.status == 403:
            hint = (
                "; the deploying account needs the ClusterRole in serving/deploy/kserve/rbac.yaml "
                "(get on this one CRD), or set pipeline.kserve.mode: knative"
            )
        elif exc.status == 404:
            hint = "; KServe is not installed"
        raise KServeError(f"read CustomResourceDefinition {CRD_NAME}: HTTP {exc.status} {exc.reason}{hint}") from None
    definition = json.loads(crd.data)
    versions = {v.get("name"): v for v in (definition.get("spec") or {}).get("versions") or []}
    schema = ((versions.get(API_VERSION) or {}).get("schema") or {}).get("openAPIV3Schema") or {}
    spec = (schema.get("properties") or {}).get("spec") or {}
    if "canary" not in (spec.get("properties") or {}):
        found = "no v1beta1 version" if API_VERSION not in versions else "a v1beta1 spec without canary"
        raise KServeError(
            f"this cluster's KServe is older than {CANARY_SINCE}: its CRD {CRD_NAME} has {found}, and "
            f"pipeline.kserve.mode: standard rolls out with spec.canary (KServe >= {CANARY_SINCE}); "
            "upgrade KServe, or set pipeline.kserve.mode: knative"
        )


def deploy_standard(
    api: Any,
    body: dict,
    settings: KServeParams,
    version: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> DeployResult:
    """Standard mode: create; or start `version` as spec.canary, wait for it, then promote it or remove it.

    Promotion patches the stable predictor to the new version (a rolling update of
    its Deployment) and removes the canary in the same request. A canary not ready
    within `settings.ready_timeout_seconds` is removed, which leaves the stable
    Deployment as it was, and KServeError says so in one line.
    """
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    wait: dict[str, Any] = dict(
        timeout_seconds=settings.ready_timeout_seconds, poll_seconds=settings.poll_seconds, sleep=sleep, clock=clock
    )
    check_canary_support(api)
    stable = predictor_deployment(name)
    existing = get_inference_service(api, namespace, name)
    if existing is None:
        log(f"deploy: creating InferenceService {namespace}/{name} (version {version}, Standard mode)")
        _create(api, body, settings, version, lambda gen: lambda isvc: stable_ready(isvc, gen), **wait)
        return DeployResult("created", name, namespace, version, stable)

    check_same_mode(existing, "standard")
    current = deployed_version(existing)
    if current == version and not (existing.get("spec") or {}).get("canary"):
        if _ready_condition(existing).get("status") != "True":
            condition = _ready_condition(existing)
            raise KServeError(
                f"version {version} is already on InferenceService {namespace}/{name} but it is not Ready "
                f"({condition.get('message') or 'no Ready condition'}); fix that, or push a new version to roll out"
            )
        log(f"deploy: {namespace}/{name} already serves version {version}; nothing to do")
        return DeployResult("unchanged", name, namespace, version, stable)
    percent = settings.canary_traffic_percent
    canary = canary_name(version)
    log(f"deploy: starting version {version} on {namespace}/{name} as canary {canary} at trafficPercent {percent}")
    patched = _patch(api, namespace, name, standard_canary_patch(body, version, percent))
    generation = int(patched["metadata"].get("generation", 0))
    outcome = wait_until(api, namespace, name, lambda isvc: canary_ready(isvc, generation, canary), "standard", **wait)
    if isinstance(outcome, str):
        _patch(api, namespace, name, remove_canary_patch())
        raise KServeError(
            f"version {version} (canary {predictor_deployment(name, canary)}) on InferenceService "
            f"{namespace}/{name} was not ready within {settings.ready_timeout_seconds:g}s ({outcome}); "
            f"removed the canary, {stable} still serves version {current}"
        )
    log(f"deploy: canary {canary} is ready; promoting version {version} to the stable predictor")
    _patch(api, namespace, name, standard_promote_patch(body))
    return DeployResult("promoted", name, namespace, version, stable, predictor_deployment(name, canary))


# ----------------------------------------------------------------------- rollback
def rollback_traffic(api: Any, namespace: str, name: str, mode: str = "knative") -> RollbackResult:
    """Undo the newest rollout the way `mode` can: Knative, traffic back; Standard, the canary removed."""
    isvc = get_inference_service(api, namespace, name)
    if isvc is None:
        raise KServeError(
            f"no InferenceService {namespace}/{name} to roll back (check pipeline.kserve.namespace and push.model_name)"
        )
    check_same_mode(isvc, mode)
    if mode == "standard":
        return _remove_canaries(api, namespace, name, isvc)
    target = rollback_target(isvc)
    if target is None:
        raise KServeError(
            f"InferenceService {namespace}/{name} has no earlier rolled-out revision to send traffic back to"
        )
    _patch(api, namespace, name, canary_patch(0))
    return RollbackResult(
        name, namespace, target, _predictor_status(isvc).get("latestReadyRevision"), "canaryTrafficPercent is 0"
    )


def _remove_canaries(api: Any, namespace: str, name: str, isvc: dict) -> RollbackResult:
    """Standard mode: remove spec.canary; after a promotion there is nothing KServe kept to go back to."""
    canaries = [c.get("predictor", {}).get("name") for c in (isvc.get("spec") or {}).get("canary") or []]
    if not canaries:
        raise KServeError(
            f"InferenceService {namespace}/{name} (Standard mode) has no canary to remove, and KServe keeps no "
            "earlier Deployment after a promotion; roll back by deploying the earlier version again "
            "(petseg rollback --to VERSION moves the store, then run the deploy step)"
        )
    _patch(api, namespace, name, remove_canary_patch())
    removed = ", ".join(predictor_deployment(name, c) for c in canaries)
    return RollbackResult(name, namespace, predictor_deployment(name), removed, "the canary is removed")


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

"""The production deployment files (serving/deploy) parse and agree with params.yaml and the client.

No cluster or container engine here, so this checks what can be checked
statically: the YAML parses, the TF Serving flags name the ports, paths,
model name and message limits params.yaml gives, compose and Kubernetes run
the same server the same way, and the limits fit the batch the client sends.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from petseg.components.core.params import load_params
from petseg.serving import client

REPO_ROOT = Path(__file__).resolve().parents[1]

DEPLOY = REPO_ROOT / "serving" / "deploy"
MIB = 2**20
CONTAINER_MODEL_BASE = "/models"
# Servers close older connections so round-robin clients re-resolve and find new replicas.
MAX_CONNECTION_AGE_MS = 300_000


@pytest.fixture(scope="module")
def params():
    return load_params(REPO_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict:
    """The Kubernetes objects by kind, as kustomization.yaml lists them.

    "Service" is the ClusterIP one; the headless gRPC Service is "HeadlessService".
    """
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text()):
            kind = doc["kind"]
            if kind == "Service" and doc["spec"].get("clusterIP") == "None":
                kind = "HeadlessService"
            assert kind not in objects, f"two {kind}s in the kustomization"
            objects[kind] = doc
    objects["Kustomization"] = kustomization
    return objects


def _flags(args: list[str]) -> dict[str, str]:
    flags = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"TF Serving flag not in --name=value form: {arg}"
        name, value = arg[2:].split("=", 1)
        flags[name] = value
    return flags


def _compose_service(compose: dict) -> dict:
    (service,) = compose["services"].values()
    return service


def _container(k8s: dict) -> dict:
    (container,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_every_deploy_file_parses_and_every_manifest_is_deployed():
    files = sorted(DEPLOY.rglob("*.yaml"))
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    manifests = {str(path.relative_to(DEPLOY)) for path in (DEPLOY / "k8s").glob("*.yaml")}
    assert set(kustomization["resources"]) == manifests  # none forgotten, none missing
    assert DEPLOY / "docker-compose.yaml" in files


def test_compose_serves_push_base_path_on_params_ports(compose, params):
    service = _compose_service(compose)
    assert service["entrypoint"] == ["tensorflow_model_server"]
    flags = _flags(service["command"])
    assert int(flags["port"]) == params.serve.grpc_port
    assert int(flags["rest_api_port"]) == params.serve.rest_port
    assert set(service["ports"]) == {
        f"{params.serve.grpc_port}:{params.serve.grpc_port}",
        f"{params.serve.rest_port}:{params.serve.rest_port}",
    }
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in service["volumes"])
    host_models = next(src for src, dst in mounts.items() if dst == CONTAINER_MODEL_BASE)
    assert (DEPLOY / host_models).resolve() == (REPO_ROOT / params.push.model_base_path).resolve()
    assert flags["model_config_file"] == f"{CONTAINER_MODEL_BASE}/models.config"
    batching_src = next(src for src, dst in mounts.items() if dst == flags["batching_parameters_file"])
    assert (DEPLOY / batching_src).resolve() == DEPLOY / "batching.config"


def test_kubernetes_runs_the_same_server_as_compose(compose, k8s):
    container = _container(k8s)
    service = _compose_service(compose)
    assert container["image"] == service["image"]
    assert container["command"] == service["entrypoint"]
    assert _flags(container["args"]) == _flags(service["command"])


def test_kubernetes_ports_probes_and_volumes_agree_with_params(k8s, params):
    container = _container(k8s)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": params.serve.grpc_port, "rest": params.serve.rest_port}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in k8s["Service"]["spec"]["ports"]}
    assert service_ports == {"grpc": (params.serve.grpc_port, "grpc"), "rest": (params.serve.rest_port, "rest")}
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert k8s["Service"]["spec"]["selector"].items() <= labels.items()
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()

    readiness = " ".join(container["readinessProbe"]["exec"]["command"])
    assert f"/dev/tcp/127.0.0.1/{params.serve.rest_port} " in readiness
    assert f"GET /v1/models/{params.push.model_name} " in readiness
    assert "grep -q '\"AVAILABLE\"'" in readiness  # ready = a version AVAILABLE, not just a 200 while LOADING
    assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert mounts["models"] == CONTAINER_MODEL_BASE
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == k8s["PersistentVolumeClaim"]["metadata"]["name"]
    flags = _flags(container["args"])
    assert flags["batching_parameters_file"] == f"{mounts['batching']}/batching.config"
    generated = {g["name"]: g.get("files") for g in k8s["Kustomization"]["configMapGenerator"]}
    assert generated[volumes["batching"]["configMap"]["name"]] == ["batching.config"]


def test_tf_servings_prometheus_endpoint_is_on_and_scraped_where_the_local_server_has_it(compose, k8s, params):
    from petseg.serving.metrics import METRICS_PATH

    text = (DEPLOY / "monitoring.config").read_text()
    enabled = re.search(r"prometheus_config\s*\{\s*enable:\s*true\s+path:\s*\"([^\"]+)\"\s*\}", text)
    assert enabled is not None and enabled.group(1) == METRICS_PATH
    service = _compose_service(compose)
    flag = _flags(service["command"])["monitoring_config_file"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in service["volumes"])
    assert (DEPLOY / next(src for src, dst in mounts.items() if dst == flag)).resolve() == DEPLOY / "monitoring.config"

    container = _container(k8s)
    assert _flags(container["args"])["monitoring_config_file"] == flag
    k8s_mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert flag == f"{k8s_mounts['monitoring']}/monitoring.config"
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    generated = {g["name"]: g.get("files") for g in k8s["Kustomization"]["configMapGenerator"]}
    assert generated[volumes["monitoring"]["configMap"]["name"]] == ["monitoring.config"]

    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(params.serve.rest_port),
        "prometheus.io/path": METRICS_PATH,
    }


def test_compose_healthcheck_asks_for_the_params_model(compose, params):
    check = " ".join(_compose_service(compose)["healthcheck"]["test"])
    assert f"/v1/models/{params.push.model_name} " in check
    assert f"/{params.serve.rest_port} " in check
    assert "grep -q '\"AVAILABLE\"'" in check


@pytest.mark.parametrize("flags_of", ["compose", "k8s"])
def test_message_limits_match_serve_max_message_mb(flags_of, compose, k8s, params):
    args = _compose_service(compose)["command"] if flags_of == "compose" else _container(k8s)["args"]
    channel_args = dict(item.split("=") for item in _flags(args)["grpc_channel_arguments"].split(","))
    limit = params.serve.max_message_mb * MIB
    assert channel_args == {
        "grpc.max_send_message_length": str(limit),
        "grpc.max_receive_message_length": str(limit),
        "grpc.max_connection_age_ms": str(MAX_CONNECTION_AGE_MS),
    }


def test_message_limit_fits_a_client_batch_of_photos_and_their_answers(params):
    photos, height, width, classes = client.DEFAULT_BATCH_SIZE, 375, 500, 3
    request = photos * height * width * 3  # uint8 pixels
    answer = photos * height * width * (1 + 4 * classes)  # uint8 mask + float32 probabilities
    overhead = 64 * 1024  # protobuf framing, model spec, shapes
    assert answer + overhead <= params.serve.max_message_mb * MIB
    assert request + overhead <= params.serve.max_message_mb * MIB
    assert params.serve.max_message_mb == client.DEFAULT_MAX_MESSAGE_MB


def test_batching_config_batches_what_the_client_sends():
    text = (DEPLOY / "batching.config").read_text()
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    values = {name: int(value) for name, value in re.findall(r"(\w+)\s*\{\s*value:\s*(\d+)\s*\}", body)}
    assert set(values) == {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"}
    assert values["max_batch_size"] == client.DEFAULT_BATCH_SIZE
    assert re.search(r"pad_variable_length_inputs:\s*false", body)


def test_servers_poll_for_pushes(compose, k8s, params):
    for args in (_compose_service(compose)["command"], _container(k8s)["args"]):
        flags = _flags(args)
        assert int(flags["file_system_poll_wait_seconds"]) == round(params.serve.poll_seconds)
        assert int(flags["model_config_file_poll_wait_seconds"]) == round(params.serve.poll_seconds)


def test_no_sigterm_drain_is_claimed_and_kubernetes_drains_with_prestop(compose, k8s):
    """TF Serving exits on SIGTERM without draining; preStop keeps it serving while endpoints drop it."""
    for path in (DEPLOY / "docker-compose.yaml", DEPLOY / "k8s" / "deployment.yaml"):
        text = path.read_text()
        assert "finish on SIGTERM" not in text and "finish after SIGTERM" not in text
        assert "no drain on SIGTERM" in text or "does not drain on SIGTERM" in text
    pre_stop = _container(k8s)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + 10  # preStop, then time for TF Serving to stop before SIGKILL


@pytest.mark.parametrize("flags_of", ["compose", "k8s"])
def test_labels_follow_the_model_stores_rule(flags_of, compose, k8s):
    """push's label protocol relies on this flag for start-up; the local server applies the same setting."""
    from petseg.serving.model_manager import ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS

    args = _compose_service(compose)["command"] if flags_of == "compose" else _container(k8s)["args"]
    flags = _flags(args)
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    assert "force_allow_any_version_labels_for_unavailable_models" not in flags
    assert ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS is True


def _major_minor(release: str) -> tuple[int, int]:
    major, minor = release.split(".")[:2]
    return int(major), int(minor)


def test_every_serving_path_runs_the_one_tf_serving_release(compose, k8s, params):
    """Compose, the Deployment and KServe's runtimeVersion (file and every body the deploy step builds) agree."""
    from petseg.components import deploy as kserve
    from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION, tf_serving_image
    from petseg.components.core.params import with_overrides

    assert _compose_service(compose)["image"] == tf_serving_image() == _container(k8s)["image"]
    shipped = yaml.safe_load((DEPLOY / "kserve" / "inferenceservice.yaml").read_text())
    assert shipped["spec"]["predictor"]["model"]["runtimeVersion"] == TF_SERVING_VERSION
    for mode in ("knative", "standard"):
        p = with_overrides(params, {"pipeline.kserve.mode": mode, "push.model_base_path": "s3://b/m"})
        body = kserve.inference_service(p.push, p.serve, p.pipeline, 3)
        assert body["spec"]["predictor"]["model"]["runtimeVersion"] == TF_SERVING_VERSION
        canary = kserve.standard_canary_patch(body, 3, 10)["spec"]["canary"][0]["predictor"]["model"]
        assert canary["runtimeVersion"] == TF_SERVING_VERSION


def test_the_tf_serving_release_is_the_exporting_tensorflows():
    """A TF 2.21 / Keras 3 SavedModel needs a TF Serving built on TF 2.21: the same major.minor, and the API's."""
    from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION

    assert _major_minor(TF_SERVING_VERSION) == _major_minor(version("tensorflow"))
    assert _major_minor(TF_SERVING_VERSION) == _major_minor(version("tensorflow-serving-api"))


# ------------------------------------------------------------------ hardening and scale
def _pod(k8s: dict) -> dict:
    return k8s["Deployment"]["spec"]["template"]["spec"]


def test_serving_pods_run_unprivileged_with_a_read_only_root(k8s):
    pod, container = _pod(k8s), _container(k8s)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000  # away from host users
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # No Kubernetes API token: neither the pod nor its own service account mounts one.
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == k8s["ServiceAccount"]["metadata"]["name"]
    assert k8s["ServiceAccount"]["automountServiceAccountToken"] is False
    # The one writable place is an emptyDir at /tmp; the model and batching config are read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert list(writable) == ["/tmp"]
    assert "emptyDir" in volumes[writable["/tmp"]]


def test_serving_resources_are_requested_and_bounded(k8s):
    from kubernetes.utils import parse_quantity

    resources = _container(k8s)["resources"]
    for name in ("cpu", "memory"):
        request, limit = parse_quantity(resources["requests"][name]), parse_quantity(resources["limits"][name])
        assert 0 < request <= limit, name
    # batching.config runs as many model threads as the CPU the pod is given.
    threads = re.search(r"num_batch_threads\s*\{\s*value:\s*(\d+)", (DEPLOY / "batching.config").read_text())
    assert int(threads.group(1)) == parse_quantity(resources["requests"]["cpu"])


def test_every_object_lives_in_the_restricted_serving_namespace(k8s):
    namespace = k8s["Namespace"]["metadata"]
    assert k8s["Kustomization"]["namespace"] == namespace["name"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind, obj in k8s.items():
        if kind not in ("Namespace", "Kustomization"):
            assert obj["metadata"]["namespace"] == namespace["name"], kind


def test_autoscaler_and_disruption_budget_keep_replicas_serving(k8s):
    deployment, hpa, pdb = k8s["Deployment"], k8s["HorizontalPodAutoscaler"], k8s["PodDisruptionBudget"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100
    # A drain or a rollout never takes every replica away at once.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_network_policy_admits_only_named_callers_on_the_serving_ports(k8s):
    policy = k8s["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == k8s["Deployment"]["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    port_names = {p["name"] for p in _container(k8s)["ports"]}
    for rule in policy["ingress"]:
        assert rule["from"] and {p["port"] for p in rule["ports"]} <= port_names
        for peer in rule["from"]:  # a named namespace in every peer: no "anyone in the cluster"
            assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
    # Each value the policy admits comes from a kustomize variable (tests/test_deploy_tools.py renders it).
    kustomization = k8s["Kustomization"]
    (access,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "petseg-serving-access"]
    assert access["options"]["annotations"] == {"config.kubernetes.io/local-config": "true"}
    variables = {literal.split("=", 1)[0] for literal in access["literals"]}
    sources = {r["source"]["fieldPath"].removeprefix("data.") for r in kustomization["replacements"]}
    assert sources == variables == {"clientNamespace", "clientApp", "monitoringNamespace"}
    assert all(
        t["select"] == {"kind": "NetworkPolicy", "name": k8s["NetworkPolicy"]["metadata"]["name"]}
        for r in kustomization["replacements"]
        for t in r["targets"]
    )


def test_headless_service_publishes_the_grpc_port_of_ready_pods(k8s, params):
    service = k8s["HeadlessService"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is False
    assert service["selector"].items() <= k8s["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["ports"]] == [
        ("grpc", params.serve.grpc_port, "grpc")
    ]


def test_compose_runs_hardened_like_kubernetes(compose, k8s):
    service = _compose_service(compose)
    pod = _pod(k8s)["securityContext"]
    assert service["user"] == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert all(volume.endswith(":ro") for volume in service["volumes"])


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_pipeline_images_end_as_a_non_root_user(name):
    lines = [line.strip() for line in (REPO_ROOT / "pipeline" / name).read_text().splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    users = [args for keyword, *args in instructions if keyword == "USER"]
    assert users and users[-1] == ["10001"]  # numeric: runAsNonRoot can verify it
    assert any(keyword == "RUN" and "--uid 10001" in args[0] for keyword, *args in instructions if args)
    # Every checkov skip says why.
    for line in lines:
        if "checkov:skip=" in line:
            assert re.fullmatch(r"# checkov:skip=CKV_DOCKER_\d+:.{40,}", line), line

"""The deployment files pass the checks a platform team runs, offline.

- kubernetes-validate: every manifest, and the kustomization as kustomize renders it, against the
  Kubernetes 1.37 schemas, strictly (an unknown field fails).
- checkov: the manifests, the rendered kustomization and pipeline/Dockerfile* with no failed
  check; every skipped check says why.
- hadolint: pipeline/Dockerfile* with no finding (settings in .hadolint.yaml).

kubernetes-validate and hadolint come from the `deploy-check` extra; checkov lives in its own
venv (.venv-checkov), because its pins clash with petseg's; scripts/setup.sh installs all three.
Each tool is also shown a bad input and must reject it, so a tool that checks nothing fails here.
kustomize is `kubectl kustomize`; the tests that render are skipped where kubectl is missing.
The checkov tests are marked slow (about 12 s each: checkov takes 10 s to start).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "serving" / "deploy"
RPS_COMPONENT = DEPLOY / "components" / "requests-per-second"
KUBERNETES_VERSION = "1.37.0"
CHECKOV = Path(os.environ.get("PETSEG_CHECKOV", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
DOCKERFILES = sorted(p for p in (REPO_ROOT / "pipeline").glob("Dockerfile*") if p.suffix != ".dockerignore")
KUSTOMIZE_KINDS = {"Kustomization", "Component"}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


CUSTOM_KINDS = frozenset({"InferenceService"})


def _manifest_files() -> list[Path]:
    """Every manifest of a built-in Kubernetes kind under serving/deploy (not compose, not kustomize's own
    files; KServe's InferenceService is a custom resource, checked against its CRD in test_crds.py).
    """
    files = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name.startswith("docker-compose"):
            continue
        kinds = {doc.get("kind") for doc in _documents(path)}
        if None in kinds:  # not a Kubernetes object (components/s3-models/params.yaml, petseg's own settings)
            continue
        if not kinds & (KUSTOMIZE_KINDS | CUSTOM_KINDS):
            files.append(path)
    return files


def _validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` renders (kustomize as kubectl ships it)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomization (per-file checks still ran)")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return _kustomize(DEPLOY)


# ---------------------------------------------------------------- kubernetes-validate
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid_kubernetes(path):
    for obj in _documents(path):
        _validate(obj)


def test_kubernetes_validate_rejects_an_unknown_field():
    (deployment,) = _documents(DEPLOY / "k8s" / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {"runAsNonRoot": True}
    with pytest.raises(kubernetes_validate.ValidationError, match="securityContxt"):
        _validate(deployment)


def test_rendered_kustomization_is_valid_and_complete(rendered):
    for obj in rendered:
        _validate(obj)
    kinds = {obj["kind"] for obj in rendered}
    assert {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    (namespace,) = _by_kind(rendered, "Namespace")
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["metadata"]["name"]
    # Two ConfigMaps, batching.config's and monitoring.config's: the NetworkPolicy's variables
    # (petseg-serving-access) are kustomize-local, applied to the policy and not to the cluster.
    batching, monitoring = sorted(_by_kind(rendered, "ConfigMap"), key=lambda c: c["metadata"]["name"])
    assert batching["metadata"]["name"].startswith("petseg-serving-batching-")
    assert monitoring["metadata"]["name"].startswith("petseg-serving-monitoring-")
    assert 'path: "/monitoring/prometheus/metrics"' in monitoring["data"]["monitoring.config"]
    # The generated ConfigMaps' hashed names reach the Deployment's volumes.
    (deployment,) = _by_kind(rendered, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["batching"]["configMap"]["name"] == batching["metadata"]["name"]
    assert volumes["monitoring"]["configMap"]["name"] == monitoring["metadata"]["name"]


def test_network_policy_admits_the_callers_named_in_the_kustomize_variables(tmp_path):
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    for old, new in (
        ("clientNamespace=petseg-clients", "clientNamespace=shop"),
        ("clientApp=petseg-client", "clientApp=checkout"),
        ("monitoringNamespace=monitoring", "monitoringNamespace=observability"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    kustomization.write_text(text)

    (policy,) = _by_kind(_kustomize(copy), "NetworkPolicy")
    clients, scrapers = policy["spec"]["ingress"]
    (peer,) = clients["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "shop"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "checkout"}
    assert {p["port"] for p in clients["ports"]} == {"grpc", "rest"}
    (monitoring,) = scrapers["from"]
    assert monitoring == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
    assert [p["port"] for p in scrapers["ports"]] == ["rest"]


def test_requests_per_second_component_adds_a_pods_metric_to_the_cpu_one(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, overlay)],
                "components": [os.path.relpath(RPS_COMPONENT, overlay)],
            }
        )
    )
    objects = _kustomize(overlay)
    (hpa,) = _by_kind(objects, "HorizontalPodAutoscaler")
    _validate(hpa)
    cpu, rps = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert rps["type"] == "Pods"
    assert rps["pods"]["metric"]["name"] == "tfserving_requests_per_second"
    assert float(rps["pods"]["target"]["averageValue"]) > 0


# ---------------------------------------------------------------- checkov
def _checkov(*args: str) -> list[dict]:
    """checkov's JSON reports (one per framework), run offline."""
    if not CHECKOV.exists():
        pytest.fail(
            f"checkov is not installed at {CHECKOV}; run `bash scripts/setup.sh` "
            "(it installs checkov into .venv-checkov), or point PETSEG_CHECKOV at a checkov"
        )
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"}
    done = subprocess.run(
        [str(CHECKOV), *args, "--skip-download", "--output", "json", "--soft-fail"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout)
    return reports if isinstance(reports, list) else [reports]


def _failures(reports: list[dict]) -> list[str]:
    return [
        f"{c['check_id']} {c['check_name']} ({c['file_path']}: {c['resource']})"
        for report in reports
        for c in report["results"]["failed_checks"]
    ]


def _assert_clean(reports: list[dict], frameworks: set[str]) -> None:
    assert {report["check_type"] for report in reports} == frameworks
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        assert report["summary"]["passed"] > 0, report["check_type"]
    assert _failures(reports) == []
    for report in reports:
        for check in report["results"]["skipped_checks"]:
            reason = (check["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) >= 40 and reason != "No comment provided", (check["check_id"], reason)


@pytest.mark.slow
def test_checkov_passes_the_manifests_and_dockerfiles():
    files = [arg for path in [*_manifest_files(), *DOCKERFILES] for arg in ("--file", str(path.relative_to(REPO_ROOT)))]
    reports = _checkov(*files, "--framework", "kubernetes", "dockerfile")
    _assert_clean(reports, {"kubernetes", "dockerfile"})
    scanned = {
        check["file_path"].lstrip("/")
        for report in reports
        for key in ("passed_checks", "skipped_checks")
        for check in report["results"][key]
    }
    assert {str(p.relative_to(REPO_ROOT)) for p in DOCKERFILES} <= scanned
    assert "serving/deploy/k8s/deployment.yaml" in scanned


@pytest.mark.slow
def test_checkov_passes_the_rendered_kustomization(rendered, tmp_path):
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered))
    _assert_clean(_checkov("--file", str(manifest), "--framework", "kubernetes"), {"kubernetes"})


@pytest.mark.slow
def test_checkov_fails_a_root_pod_and_a_root_image(tmp_path):
    (deployment,) = _documents(DEPLOY / "k8s" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    del pod["securityContext"], pod["automountServiceAccountToken"], pod["containers"][0]["securityContext"]
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nRUN pip install --no-cache-dir petseg==0.1.0\n")
    reports = _checkov("--directory", str(tmp_path), "--framework", "kubernetes", "dockerfile")
    failed = {line.split()[0] for line in _failures(reports)}
    assert {"CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_38", "CKV_K8S_22", "CKV_DOCKER_3"} <= failed


# ---------------------------------------------------------------- hadolint
def _hadolint(*paths: Path) -> subprocess.CompletedProcess:
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's, activated or not
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed; run `bash scripts/setup.sh` (the deploy-check extra ships it)")
    return subprocess.run(
        [hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), "--no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


def test_hadolint_passes_the_dockerfiles():
    assert len(DOCKERFILES) == 2
    done = _hadolint(*DOCKERFILES)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_hadolint_fails_an_unpinned_install(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\n")
    done = _hadolint(dockerfile)
    assert done.returncode == 1
    assert "DL3008" in done.stdout and "DL3009" in done.stdout

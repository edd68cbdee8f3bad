"""Every custom resource the project ships or generates, checked strictly against the upstream CRDs.

tests/crd_schema.py applies each CRD's openAPIV3Schema the way the API server does
under `kubectl apply --validate=strict`: an unknown field is refused, not pruned.
The CRDs are upstream copies (tests/data/crds/PROVENANCE.md, checked here by sha256):
KServe v0.20.0 InferenceService, Trainer v2.3.0 TrainJob / TrainingRuntime /
ClusterTrainingRuntime, Training Operator v1.9.4 TFJob. The TrainJob route's
objects are checked in tests/test_trainjob.py.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re

import pytest
import yaml
from crd_schema import CRD_DIR, merge_patch, problems
from helpers import REPO_ROOT
from test_kserve import _api
from test_kserve import _deploy as deploy_knative
from test_kserve import _isvc as knative_isvc
from test_kserve_standard import CRD_V020
from test_kserve_standard import _deploy as deploy_standard
from test_kserve_standard import _isvc as standard_isvc

from petseg import cli
from petseg.components import deploy as kserve
from petseg.components.core.params import load_params, with_overrides
from petseg.pipeline import tfjob

PARAMS = load_params(REPO_ROOT / "params.yaml")
NOT_FOUND = {"kind": "Status", "reason": "NotFound", "code": 404}


def test_the_crds_are_the_upstream_files_provenance_names():
    rows = re.findall(r"^\| (\S+\.yaml) \|.*\| ([0-9a-f]{64}) \|$", (CRD_DIR / "PROVENANCE.md").read_text(), re.M)
    assert {name for name, _ in rows} == {p.name for p in CRD_DIR.glob("*.yaml")}
    for name, digest in rows:
        assert hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest() == digest, name


# ------------------------------------------------------------------ shipped and generated
def test_the_shipped_inference_service_validates():
    documents = list(yaml.safe_load_all((REPO_ROOT / "serving/deploy/kserve/inferenceservice.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["InferenceService"]
    assert problems(documents[0]) == []


def test_the_tfjob_route_validates_against_the_training_operator_crd(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "tfjob.yaml"
    assert cli.main(["pipeline", "tfjob", "--pvc", "work", "--param", "pipeline.train_workers=3", "-o", str(out)]) == 0
    _, job = yaml.safe_load_all(out.read_text())
    assert problems(job) == []


def _sent_objects(flows) -> list[dict]:
    """Each body POSTed, and the object each merge PATCH leaves on the API server, without status."""
    objects = []
    for run, answers, start in flows:
        api, wire = _api(answers)
        with contextlib.suppress(kserve.KServeError):  # the timeout flows end in an error after their last request
            run(api)
        held = copy.deepcopy(start)
        for sent in wire.sent:
            if sent.method == "POST":
                held = sent.body
            elif sent.method == "PATCH":
                held = merge_patch(held, sent.body)
            else:
                continue
            objects.append({k: v for k, v in held.items() if k != "status"})
    return objects


def _knative_flows():
    old = knative_isvc(6, 3, 3, True, "rev-1", rolled_out="rev-1")
    failing = knative_isvc(7, 4, 4, False, "rev-1", "rev-2", rolled_out="rev-1")
    return [
        (
            deploy_knative,
            [(404, NOT_FOUND), (201, knative_isvc(7, 1, 0, False, None)), (200, knative_isvc(7, 1, 1, True, "rev-1"))],
            None,
        ),
        (
            deploy_knative,
            [
                (200, old),
                (200, knative_isvc(7, 4, 3, True, "rev-1")),
                (200, knative_isvc(7, 4, 4, True, "rev-2")),
                (200, old),
            ],
            old,
        ),
        (
            lambda api: deploy_knative(api, ready_timeout_seconds=1),
            [(200, old), (200, failing)] + [(200, failing)] * 40,
            old,
        ),
    ]


def _standard_flows():
    old = standard_isvc(6, 3, 3)
    waiting = standard_isvc(6, 4, 4, canary=7)
    return [
        (
            deploy_standard,
            [(200, CRD_V020), (404, NOT_FOUND), (201, standard_isvc(7, 1, 0, False)), (200, standard_isvc(7, 1, 1))],
            None,
        ),
        (
            deploy_standard,
            [
                (200, CRD_V020),
                (200, old),
                (200, waiting),
                (200, standard_isvc(6, 4, 4, canary=7, canary_ready=True)),
                (200, old),
            ],
            old,
        ),
        (
            lambda api: deploy_standard(api, ready_timeout_seconds=1),
            [(200, CRD_V020), (200, old)] + [(200, waiting)] * 40,
            old,
        ),
    ]


@pytest.mark.parametrize("mode", ["knative", "standard"])
def test_every_object_the_deploy_step_writes_validates(mode):
    """Create, canary, promotion, and the timeout's rollback: each object as the API server would hold it."""
    objects = _sent_objects(_knative_flows() if mode == "knative" else _standard_flows())
    assert len(objects) >= 5
    for obj in objects:
        assert problems(obj) == [], obj["spec"]
    if mode == "standard":
        assert any(obj["spec"].get("canary") for obj in objects)  # the canary itself was among them


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
@pytest.mark.parametrize("mode", ["knative", "standard"])
def test_every_body_validates_for_each_protocol(mode, protocol):
    params = with_overrides(
        PARAMS,
        {"pipeline.kserve.mode": mode, "pipeline.kserve.protocol": protocol, "push.model_base_path": "s3://b/m"},
    )
    body = kserve.inference_service(params.push, params.serve, params.pipeline, 12)
    assert problems(body) == []
    assert problems(kserve.with_canary(body, 10)) == []
    assert problems(merge_patch(body, kserve.standard_canary_patch(body, 13, 10))) == []


# ------------------------------------------------------------------ a misspelt field fails
def _isvc_body() -> dict:
    params = with_overrides(PARAMS, {"push.model_base_path": "gs://b/m", "pipeline.kserve.mode": "standard"})
    body = kserve.inference_service(params.push, params.serve, params.pipeline, 3)
    return merge_patch(body, kserve.standard_canary_patch(body, 4, 10))


MISTAKES = [
    (
        lambda b: b["spec"]["predictor"]["model"].__setitem__("storageURI", "gs://x"),
        'spec.predictor.model: unknown field "storageURI"',
    ),
    (lambda b: b["metadata"].__setitem__("annotation", {}), 'metadata: unknown field "annotation"'),
    (lambda b: b["spec"]["canary"][0].__setitem__("trafficPercnt", 5), 'spec.canary.0: unknown field "trafficPercnt"'),
    (lambda b: b["spec"]["canary"][0].pop("trafficPercent"), "spec.canary.0: 'trafficPercent' is a required property"),
    (
        lambda b: b["spec"]["canary"][0].__setitem__("trafficPercent", 101),
        "spec.canary.0.trafficPercent: 101 is greater than the maximum of 100",
    ),
    (
        lambda b: b["spec"]["predictor"].__setitem__("minReplicas", "1"),
        "spec.predictor.minReplicas: '1' is not of type 'integer'",
    ),
    (
        lambda b: b["spec"]["predictor"]["model"]["ports"][0].__setitem__("port", 9000),
        'spec.predictor.model.ports.0: unknown field "port"',
    ),
    (
        lambda b: b["spec"]["predictor"]["model"]["resources"]["limits"].__setitem__("cpu", ["2"]),
        "spec.predictor.model.resources.limits.cpu",
    ),
    (lambda b: b["metadata"].__setitem__("name", "Petseg"), "metadata.name: 'Petseg' does not match"),
    (lambda b: b.__setitem__("apiVersion", "serving.kserve.io/v1alpha1"), "serves v1beta1"),
]


@pytest.mark.parametrize(("mistake", "says"), MISTAKES)
def test_a_misspelt_or_ill_typed_field_fails(mistake, says):
    body = _isvc_body()
    assert problems(body) == []
    mistake(body)
    found = problems(body)
    assert len(found) == 1 and says in found[0], found


def test_a_misspelt_tfjob_field_fails():
    _, job = tfjob.tfjob_manifests(PARAMS, "img:1", "work", "ns")
    job["spec"]["tfReplicaSpec"] = job["spec"].pop("tfReplicaSpecs")
    assert problems(job) == ["spec: 'tfReplicaSpecs' is a required property", 'spec: unknown field "tfReplicaSpec"']


def test_kserve_0_19_would_refuse_the_standard_canary_and_the_deploy_step_checks_first():
    """Why Standard mode reads the CRD first: KServe before v0.20.0 has no spec.canary at all."""
    body = _isvc_body()
    assert problems(body, "serving.kserve.io_inferenceservices.v0.19.0.yaml") == ['spec: unknown field "canary"']
    without = {**body, "spec": {k: v for k, v in body["spec"].items() if k != "canary"}}
    assert problems(without, "serving.kserve.io_inferenceservices.v0.19.0.yaml") == []

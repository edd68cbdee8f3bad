"""Prometheus metrics of the local server (serving/metrics.py) at /monitoring/prometheus/metrics.

Each test starts its own server (its own registry), sends known requests over
gRPC and REST, scrapes the REST port and parses the page with
prometheus-client's own parser, so the counts are what Prometheus would read.
"""

from __future__ import annotations

import http.client
import json
import shutil

import grpc
import pytest
from test_status_codes import BATCHING_FILE, MODELS_CONFIG, Stubs, image, predict_request, status_request

from petseg.components.contracts import signatures
from petseg.components.core.params import ServeParams

tf = pytest.importorskip("tensorflow")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from petseg.serving.metrics import LATENCY_BUCKETS_USEC, METRICS_PATH  # noqa: E402
from petseg.serving.server import start_server  # noqa: E402

SERVE = ServeParams(
    poll_seconds=0.5, workers=4, max_message_mb=4, max_image_pixels=4_000_000, batching_parameters_file=BATCHING_FILE
)
COUNT = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency"
STATE = "petseg_serving_model_version_state"


@pytest.fixture
def server(tiny_savedmodel, tmp_path):
    base = tmp_path / "models"
    for version in (1, 2):
        shutil.copytree(tiny_savedmodel, base / "petseg" / str(version))
    (base / "models.config").write_text(MODELS_CONFIG)
    running = start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, rest_port=0, log=lambda line: None)
    try:
        yield running
    finally:
        running.stop(0)


def rest(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def scrape(server) -> dict[str, list]:
    """Metric family name -> its samples, as Prometheus parses the page."""
    status, content_type, body = rest(server, "GET", METRICS_PATH)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def counts(families: dict) -> dict[tuple, float]:
    """(model_name, version, signature, API, entrypoint, status) -> count, for every request counted."""
    keys = ("model_name", "version", "signature", "API", "entrypoint", "status")
    return {tuple(s.labels[k] for k in keys): s.value for s in families[COUNT] if s.name == COUNT + "_total"}


def test_one_good_and_one_bad_request_per_api_are_counted_exactly(server):
    stubs = Stubs(server.target)
    batch = image(32, 32)[None]
    stubs.calls["predict"](predict_request(batch, version=1), timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        stubs.calls["predict"](predict_request(batch, signature="no_such_signature"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ok, _, _ = rest(server, "POST", "/v1/models/petseg:predict", json.dumps({"instances": batch.tolist()}).encode())
    bad, _, _ = rest(server, "POST", "/v1/models/petseg/versions/2:predict", b"{not json")
    assert (ok, bad) == (200, 400)

    assert counts(scrape(server)) == {
        ("petseg", "1", signatures.SIGNATURE_IMAGES, "Predict", "GRPC", "OK"): 1.0,
        ("petseg", "", "no_such_signature", "Predict", "GRPC", "FAILED_PRECONDITION"): 1.0,
        ("petseg", "2", "serving_default", "Predict", "REST", "OK"): 1.0,  # the latest answered
        ("petseg", "2", "serving_default", "Predict", "REST", "INVALID_ARGUMENT"): 1.0,
    }


def test_latency_histogram_has_tf_servings_buckets_and_one_observation_per_request(server):
    stubs = Stubs(server.target)
    stubs.calls["predict"](predict_request(image(32, 32)[None]), timeout=30)
    stubs.calls["predict"](predict_request(image(32, 32)[None]), timeout=30)
    status, _, _ = rest(server, "GET", "/v1/models/unknown")
    assert status == 404

    samples = scrape(server)[LATENCY]
    grpc_ok = {"model_name": "petseg", "API": "Predict", "entrypoint": "GRPC", "status": "OK"}
    buckets = [s for s in samples if s.name == LATENCY + "_bucket" and {k: s.labels[k] for k in grpc_ok} == grpc_ok]
    assert len(buckets) == len(LATENCY_BUCKETS_USEC) + 1  # TF Serving's 33 bounds, then +Inf
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 2.0
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    total = next(s for s in samples if s.name == LATENCY + "_sum" and s.labels == grpc_ok)
    assert total.value > 0  # microseconds of two real model runs
    not_found = {"model_name": "unknown", "API": "GetModelStatus", "entrypoint": "REST", "status": "NOT_FOUND"}
    assert next(s for s in samples if s.name == LATENCY + "_count" and s.labels == not_found).value == 1.0


def test_version_states_follow_the_manager(server):
    families = scrape(server)
    states = {(s.labels["version"], s.labels["state"]): s.value for s in families[STATE]}
    assert states[("1", "AVAILABLE")] == 1.0 and states[("2", "AVAILABLE")] == 1.0
    assert states[("1", "LOADING")] == 0.0 and states[("2", "END")] == 0.0
    assert {s.labels["model_name"] for s in families[STATE]} == {"petseg"}
    assert sum(s.value for s in families[STATE]) == 2.0  # one state per version

    response = Stubs(server.target).calls["status"](status_request(), timeout=10)
    assert {(str(v.version), v.state) for v in response.model_version_status} == {("1", 30), ("2", 30)}


def test_metadata_status_and_transport_refusals_are_counted_too(server):
    stubs = Stubs(server.target)
    stubs.calls["status"](status_request(version=1), timeout=10)
    status, _, _ = rest(server, "GET", "/v1/models/petseg/metadata")
    assert status == 200
    too_big = rest(
        server,
        "POST",
        "/v1/models/petseg:predict",
        b"x" * (SERVE.max_message_mb * 2**20 + 1),
        {"Content-Length": str(SERVE.max_message_mb * 2**20 + 1)},
    )
    assert too_big[0] == 413
    status, _, _ = rest(server, "GET", "/not/an/api")  # not a request to the model: not counted
    assert status == 404

    assert counts(scrape(server)) == {
        ("petseg", "1", "", "GetModelStatus", "GRPC", "OK"): 1.0,
        ("petseg", "2", "", "GetModelMetadata", "REST", "OK"): 1.0,
        ("petseg", "", "", "Predict", "REST", "RESOURCE_EXHAUSTED"): 1.0,
    }


def test_each_server_has_its_own_registry(server, tiny_savedmodel, tmp_path):
    base = tmp_path / "other"
    shutil.copytree(tiny_savedmodel, base / "petseg" / "7")
    other = start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, rest_port=0, log=lambda line: None)
    try:
        Stubs(server.target).calls["predict"](predict_request(image(32, 32)[None]), timeout=30)
        assert counts(scrape(other)) == {}
        assert sum(counts(scrape(server)).values()) == 1.0
        assert {s.labels["version"] for s in scrape(other)[STATE]} == {"7"}
    finally:
        other.stop(0)


def test_openmetrics_is_served_when_asked(server):
    status, content_type, body = rest(
        server, "GET", METRICS_PATH, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")

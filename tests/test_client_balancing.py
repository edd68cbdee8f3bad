"""One client spreads its calls over every server its target resolves to (client-side round robin).

This is how one client reaches many TF Serving replicas through the headless Service
(serving/deploy/k8s/service-headless.yaml): cluster DNS answers with every Ready pod and the
client's channel balances over them. Here the target lists two local servers directly.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from petseg.serving.client import SegmentationClient

CALLS = 20


class _CountingPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers every Predict with its own id as the model version, and counts the calls."""

    def __init__(self, server_id: int, counts: Counter, lock: threading.Lock):
        self.server_id, self.counts, self.lock = server_id, counts, lock

    def Predict(self, request, context):
        with self.lock:
            self.counts[self.server_id] += 1
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.server_id
        return response


@pytest.fixture()
def two_servers():
    """Two gRPC servers on free local ports; yields (target naming both, call counts by server id)."""
    counts: Counter = Counter()
    lock = threading.Lock()
    servers, ports = [], []
    for server_id in (1, 2):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _CountingPredictionService(server_id, counts, lock), server
        )
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    yield "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports), counts
    for server in servers:
        server.stop(grace=None)


def _request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "petseg"
    return request


def test_one_client_spreads_its_calls_over_every_server(two_servers):
    target, counts = two_servers
    with SegmentationClient(target, timeout_seconds=10) as client:
        versions = [client.predict(_request()).model_spec.version.value for _ in range(CALLS)]
    assert set(versions) == {1, 2}
    assert counts[1] + counts[2] == CALLS
    # Round robin alternates once both connections are up; the first calls may all reach the
    # server that connected first, so ask only for a fair share each.
    assert min(counts[1], counts[2]) >= CALLS // 4


def test_a_plain_channel_pins_one_server(two_servers):
    """The default policy (pick_first) is what the client avoids: one server gets every call."""
    target, counts = two_servers
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(CALLS):
            stub.Predict(_request(), timeout=10)
    assert sorted(counts.values()) == [CALLS]

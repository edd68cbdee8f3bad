"""Prometheus metrics of the local server, at TF Serving's own path on the REST port.

Names and labels follow TF Serving where it has the metric
(tensorflow_serving/servables/tensorflow/util.cc, exported by
util/prometheus_exporter.cc, which turns "/tensorflow/serving/request_count"
into ":tensorflow:serving:request_count"):

- ``:tensorflow:serving:request_count_total`` (counter): TF Serving's
  request_count{model_name, status}, with version, signature, API and
  entrypoint added. prometheus-client writes a counter with the ``_total``
  suffix, TF Serving without it; everything else matches. status is the
  canonical code name (OK, INVALID_ARGUMENT, ...) for REST too, as TF Serving
  records it; entrypoint is GRPC or REST and API the method (Predict,
  GetModelMetadata, GetModelStatus), TF Serving's label names and values.
- ``:tensorflow:serving:request_latency`` (histogram, microseconds, TF
  Serving's buckets 10 * 1.8^i, i < 33): labels model_name, API, entrypoint,
  status as in TF Serving.
- ``petseg_serving_model_version_state`` (gauge, a state set): 1 for the
  state each version of the model is in (LOADING, AVAILABLE, UNLOADING, END),
  0 for the others. TF Serving exports no such metric; GetModelStatus is its
  way to ask.

Each server owns its registry (several servers run in one test process), so
nothing lands in prometheus-client's global one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from petseg.serving.model_manager import ModelManager

METRICS_PATH = "/monitoring/prometheus/metrics"  # util/prometheus_exporter.cc kPrometheusPath
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
VERSION_STATE = "petseg_serving_model_version_state"
GRPC, REST = "GRPC", "REST"
# monitoring::Buckets::Exponential(10, 1.8, 33): 33 bounds 10 * 1.8^i; prometheus-client adds +Inf.
LATENCY_BUCKETS_USEC = tuple(10 * 1.8**i for i in range(33))
# ModelVersionStatus.State (tensorflow_serving/apis/get_model_status.proto) -> its name.
STATE_NAMES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
_EXPORTED_STATES = ("LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass
class Call:
    """One request as the metrics see it: filled in while it is handled, recorded once at the end."""

    entrypoint: str
    api: str = ""
    model_name: str = ""
    version: str = ""
    signature: str = ""
    started: float = field(default_factory=time.perf_counter)

    def describe(self, api: str, spec, default_signature: str | None = None) -> None:
        """Take the model, version and signature a request's ModelSpec names."""
        self.api = api
        self.model_name = spec.name
        if spec.WhichOneof("version_choice") == "version":
            self.version = str(spec.version.value)
        if default_signature is not None:
            self.signature = spec.signature_name or default_signature

    def answered_by(self, version: int) -> None:
        """The version that answered (a request asking for the latest or a label learns it here)."""
        self.version = str(version)


class ServerMetrics:
    """The counters, histogram and version states of one server, in a registry of its own."""

    def __init__(self, manager: ModelManager):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            REQUEST_COUNT,
            "The total number of requests (TF Serving's, with version, signature, API and entrypoint added).",
            ["model_name", "version", "signature", "API", "entrypoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint", "status"],
            buckets=LATENCY_BUCKETS_USEC,
            registry=self.registry,
        )
        self.registry.register(_VersionStates(manager))

    def record(self, call: Call, code: grpc.StatusCode) -> None:
        """Count one finished request and observe its latency."""
        status = code.name
        micros = (time.perf_counter() - call.started) * 1e6
        self.requests.labels(call.model_name, call.version, call.signature, call.api, call.entrypoint, status).inc()
        self.latency.labels(call.model_name, call.api, call.entrypoint, status).observe(micros)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the Accept header asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _VersionStates:
    """Collects the manager's version states at scrape time, as a state set per version."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    def describe(self):
        return []  # collected lazily: the versions change while the server runs

    def collect(self):
        family = GaugeMetricFamily(
            VERSION_STATE,
            "1 for the state each version of the model is in (LOADING, AVAILABLE, UNLOADING, END), 0 for the others.",
            labels=["model_name", "version", "state"],
        )
        for version, state in sorted(self._manager.states().items()):
            current = STATE_NAMES.get(state.state, str(state.state))
            for name in _EXPORTED_STATES:
                family.add_metric([self._manager.model_name, str(version), name], 1.0 if name == current else 0.0)
        yield family

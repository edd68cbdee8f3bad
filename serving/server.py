"""`petseg serve`: a local server that speaks TF Serving's gRPC and REST APIs, for development and CI.

Production runs the official tensorflow/serving image with the files in
serving/deploy; TF Serving cannot run here (no binary on the package
registries, no container engine), so this server implements the same gRPC
services (tensorflow_serving.apis PredictionService.Predict and
GetModelMetadata, ModelService.GetModelStatus) and the same REST API
(serving/rest.py) over the same model base path, with TF Serving's status
codes and messages. It serves the newest version (or those models.config
names), picks up pushed versions while running, serves requests in parallel,
refuses what production would refuse (a batch over the batching config's
max_batch_size) and what would exhaust it (an encoded image declaring more
than serve.max_image_pixels), and drains in-flight requests on SIGTERM
before exiting.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import ServeParams

if TYPE_CHECKING:  # importing these loads TensorFlow; `petseg serve` checks its port first
    import grpc

    from petseg.serving.metrics import ServerMetrics
    from petseg.serving.model_manager import ModelManager
    from petseg.serving.rest import RestServer
    from petseg.serving.servicer import InflightCounter

MIB = 2**20
SETTLE_SECONDS = 2.0
SETTLE_QUIET_SECONDS = 0.2


def message_options(max_message_mb: int) -> list[tuple[str, int]]:
    """gRPC channel options raising the send and receive limits from gRPC's 4 MB default."""
    limit = max_message_mb * MIB
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


@dataclass
class RunningServer:
    """A started server: where it listens and how to stop it."""

    server: grpc.Server
    host: str
    port: int
    manager: ModelManager
    inflight: InflightCounter
    rest: RestServer
    rest_port: int
    metrics: ServerMetrics

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes this server: TF Serving's path on the REST port."""
        from petseg.serving.metrics import METRICS_PATH

        return self.rest_url + METRICS_PATH

    @property
    def target(self) -> str:
        return f"{self._client_host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. http://localhost:8501."""
        host = self._client_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.rest_port}"

    @property
    def _client_host(self) -> str:
        return "localhost" if self.host in ("0.0.0.0", "::", "[::]") else self.host.strip("[]")

    def stop(self, grace_seconds: float) -> None:
        """Refuse new requests, let those in flight finish (up to grace_seconds), stop polling."""
        deadline = time.monotonic() + grace_seconds
        self.rest.shutdown()  # stops taking connections; requests already being handled go on
        self.server.stop(grace_seconds).wait()
        while self.inflight.count and time.monotonic() < deadline:
            time.sleep(0.02)
        self.rest.server_close()
        self.manager.stop()

    def drain(self, grace_seconds: float) -> None:
        """Stop gracefully: answer what was already sent, then refuse new RPCs and finish those in flight.

        gRPC cancels calls it has received but not yet handed to a handler
        when the server stops, so requests already on their way (a big
        upload, or a queue behind busy workers) would be cut off. The server
        first keeps serving until it has been idle for SETTLE_QUIET_SECONDS,
        at most SETTLE_SECONDS, and only then stops taking calls.
        """
        deadline = time.monotonic() + grace_seconds
        settle_until = min(deadline, time.monotonic() + SETTLE_SECONDS)
        while time.monotonic() < settle_until and not self.inflight.idle_for(SETTLE_QUIET_SECONDS):
            time.sleep(0.02)
        self.stop(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class ServeResult:
    target: str
    drained: int


def request_limits(params: ServeParams):
    """What one request may ask, from serve.* and the batching parameters file TF Serving is given."""
    from petseg.serving.batching import read_max_batch_size
    from petseg.serving.servicer import RequestLimits

    max_batch = read_max_batch_size(params.batching_parameters_file) if params.batching_parameters_file else None
    return RequestLimits(
        max_message_bytes=params.max_message_mb * MIB,
        max_image_pixels=params.max_image_pixels,
        max_batch_size=max_batch,
    )


def start_server(
    model_base_path: str | Path,
    model_name: str,
    params: ServeParams,
    *,
    host: str | None = None,
    port: int | None = None,
    rest_port: int | None = None,
    log: Callable[[str], None] = print,
) -> RunningServer:
    """Load what the base path holds, start polling it, and listen (gRPC and REST); port 0 picks a free port.

    rest_port None means serve.rest_port, or a free port when `port` is 0.

    Raises PetsegError when a port is taken, the batching parameters file is
    unreadable, or models.config is unreadable.
    """
    host = params.host if host is None else host
    port = params.grpc_port if port is None else port
    if rest_port is None:  # asked for a free gRPC port: a free REST port too, never a fixed one beside it
        rest_port = 0 if port == 0 else params.rest_port
    if port and port == rest_port:
        raise PetsegError(f"the gRPC and REST ports are both {port}; pass different --port and --rest-port")
    for wanted, flag in ((port, "--port"), (rest_port, "--rest-port")):
        if wanted:
            _check_port_free(host, wanted, flag)

    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from petseg.serving.body_budget import BodyBudget
    from petseg.serving.metrics import ServerMetrics
    from petseg.serving.model_manager import ModelManager
    from petseg.serving.rest import RestContext, start_rest_server
    from petseg.serving.servicer import InflightCounter, ModelServicer, PredictionServicer

    limits = request_limits(params)
    log = _one_line_at_a_time(log)  # handler threads log too (a dropped client): lines must not interleave

    manager = ModelManager(model_base_path, model_name, params.poll_seconds, log=log)
    manager.refresh()
    if not manager.loaded_versions():
        log(
            f"petseg serve: no version under {Path(model_base_path) / model_name} yet; answering UNAVAILABLE "
            "until `petseg push` writes one"
        )
    inflight = InflightCounter()
    metrics = ServerMetrics(manager)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=params.workers, thread_name_prefix="petseg-rpc"),
        options=[*message_options(params.max_message_mb), ("grpc.so_reuseport", 0)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, limits, inflight, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, inflight, metrics), server)
    try:
        bound = server.add_insecure_port(f"{_grpc_host(host)}:{port}")
    except RuntimeError:
        raise _port_in_use(host, port, "--port") from None
    try:
        rest, _ = start_rest_server(
            host,
            rest_port,
            RestContext(
                manager,
                limits,
                inflight,
                threading.BoundedSemaphore(params.workers),
                metrics,
                budget=BodyBudget(params.rest_body_budget_mb * MIB),
                max_json_depth=params.rest_max_json_depth,
                log=log,
            ),
        )
    except OSError:
        server.stop(0)
        raise _port_in_use(host, rest_port, "--rest-port") from None
    server.start()
    manager.start()
    running = RunningServer(server, host, bound, manager, inflight, rest, rest.server_address[1], metrics)
    batch = f"max batch {limits.max_batch_size}" if limits.max_batch_size else "no batch limit"
    log(
        f"petseg serve: listening on {host}:{bound} (gRPC) and {host}:{running.rest_port} (REST), model "
        f"{model_name} from {Path(model_base_path) / model_name}, metrics at {running.metrics_url}, "
        "versions loaded: "
        f"{', '.join(map(str, manager.loaded_versions())) or 'none yet'}; {batch}, images up to "
        f"{params.max_image_pixels / 1e6:.1f} MP"
    )
    return running


def serve(
    model_base_path: str | Path,
    model_name: str,
    params: ServeParams,
    *,
    host: str | None = None,
    port: int | None = None,
    rest_port: int | None = None,
    log: Callable[[str], None] = print,
) -> ServeResult:
    """Run the server in the foreground until SIGTERM or SIGINT, then drain and return."""
    running = start_server(model_base_path, model_name, params, host=host, port=port, rest_port=rest_port, log=log)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    drained = running.inflight.count
    log(
        f"petseg serve: {received[0] if received else 'stop'} received, draining "
        f"{drained} in-flight request(s) (up to {params.drain_seconds:g}s)"
    )
    running.drain(params.drain_seconds)
    log("petseg serve: stopped")
    return ServeResult(target=running.target, drained=drained)


def _one_line_at_a_time(log: Callable[[str], None]) -> Callable[[str], None]:
    """log, called under a lock: print writes a line and its newline separately, so threads could interleave them."""
    lock = threading.Lock()

    def log_line(line: str) -> None:
        with lock:
            log(line)

    return log_line


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Fail with one clear line before loading anything when another process holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_in_use(host, port, flag) from None
            raise PetsegError(
                f"cannot listen on {host}:{port}: {exc.strerror}; pass {flag} or fix serve.host"
            ) from None


def _port_in_use(host: str, port: int, flag: str = "--port") -> PetsegError:
    return PetsegError(f"port {port} on {host} is already in use; stop the other server or pass {flag} PORT")

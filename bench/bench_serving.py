"""Serving latency and throughput over gRPC and REST, beside in-process inference of the same SavedModel.

Exports the params.yaml model (untrained, encoder_weights none: the compute is
what matters) or takes --model, lays it out as version 1 under a temporary
model base path, starts `petseg serve` in a subprocess on a free port, and for
each image size x batch size x concurrency measures three modes for
--seconds each (and at least --min-requests requests). At concurrency 1 each
API is paired with in-process inference, request by request (one API at a
time: REST's JSON work would otherwise slow whatever runs after it), so the
overhead ratio compares requests made under the same machine conditions; at
higher concurrency each mode runs as closed loops, in three alternating rounds
so that other load on the machine hits all alike:

- in-process, the floor: threads calling the SavedModel's serving_default
  signature directly (numpy in, mask out);
- gRPC: threads, each with its own channel, sending PredictRequests (mask
  only, as the client does) to the server;
- REST: threads, each with its own keep-alive HTTP connection, POSTing
  TF Serving's row-form JSON ({"instances": pixels}) to
  /v1/models/petseg:predict and reading the masks out of the JSON answer
  (which, REST having no output_filter, carries the probabilities too).

Then, at batch 1 and the same sizes and concurrency levels, the encoded forms
an app uses: a photo-like JPEG (quality 90) sent as bytes, the mask back,

- in-process serving_png: the SavedModel's PNG signature called directly,
  the PNG decoded (the floor for the PNG form);
- gRPC bytes: serving_bytes over gRPC with output_filter mask (the stock
  tensorflow-serving-api stub);
- REST PNG: serving_png over REST with a `requests` Session: {"b64": JPEG}
  in, {"b64": PNG} out, decoded to the mask;

paired three ways request by request at concurrency 1 (which goes first
rotates each cycle), in alternating closed-loop rounds above it. The goal:
REST PNG p50 <= 1.3x gRPC bytes p50 at concurrency 1. It also reports the
bytes on the wire per request for every API and form (request and answer
payload: the protobuf message for gRPC, the JSON body for REST; HTTP/2 and
HTTP/1.1 framing and headers not counted).

It prints p50/p95/p99 latency per request and throughput in images/s, then
the goals: each API's added latency at concurrency 1 (p50 server / p50
of the in-process requests it was paired with - 1, goal < 15%) and gRPC's p99/p50 at concurrency 16 (goal < 3).
Client, server and the floor share this machine's CPUs (and whatever else
runs on it): the load average is printed with the results.

    python bench/bench_serving.py [--seconds 3] [--sizes 128x128,500x375] [--batches 1,8]
                                  [--concurrency 1,4,16] [--model SAVEDMODEL] [--workers N] [--json FILE]

`measure(args)` returns the figures as a dict (`--json FILE` writes them too),
which `bench/run_all.py` puts into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import orjson
import yaml

from petseg.components.contracts import signatures
from petseg.components.core.params import load_params, params_to_dict, with_overrides
from petseg.components.ml.cluster import free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_GOAL = 0.15  # server p50 / in-process p50 - 1, at the lowest concurrency
PNG_GOAL = 1.3  # REST PNG p50 / gRPC bytes p50, paired at the lowest concurrency
JPEG_QUALITY = 90
TAIL_GOAL = 3.0  # server p99 / p50, at the highest concurrency


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell and mode")
    p.add_argument("--min-requests", type=int, default=30, help="measure at least this many requests per cell")
    p.add_argument("--sizes", default="128x128,500x375", help="WIDTHxHEIGHT list")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--model", type=Path, default=None, help="a SavedModel to serve (default: export the params model)")
    p.add_argument("--workers", type=int, default=None, help="server threads (default: serve.workers)")
    p.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


@dataclass
class Cell:
    latencies: list[float]
    seconds: float
    images: int

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    @property
    def throughput(self) -> float:
        return self.images / self.seconds


def closed_loop(make_call, concurrency: int, seconds: float, min_requests: int, batch: int) -> Cell:
    """`concurrency` threads each calling make_call()() back to back; latencies of the measured calls."""
    latencies: list[float] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(concurrency + 1)
    stop_at: list[float] = [0.0]

    failures: list[BaseException] = []

    def measured_calls(call):
        while True:
            started = time.perf_counter()
            call()
            ended = time.perf_counter()
            with lock:
                if ended > stop_at[0] and len(latencies) >= min_requests:
                    return
                latencies.append(ended - started)

    def worker():
        try:
            call = make_call()
            call()  # warm: connection, kernels for this shape
            start_barrier.wait()
            measured_calls(call)
        except threading.BrokenBarrierError:
            pass  # another client failed: its error is the one to report
        except Exception as exc:  # a failed request: stop the whole cell instead of hanging at the barrier
            failures.append(exc)
            start_barrier.abort()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start_barrier.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"bench_serving: a client failed at concurrency {concurrency}: {failures[0]!r}")
    elapsed = time.perf_counter() - began
    return Cell(latencies, elapsed, len(latencies) * batch)


def paired(baseline: Callable, api: Callable, seconds: float, min_requests: int, batch: int) -> tuple[Cell, Cell]:
    """Concurrency 1: one baseline request and one API request in turn, which goes first swapped every cycle.

    Both then meet the same machine (load from elsewhere, warm or cold caches,
    the other process's threads asleep or awake), so the p50 ratio measures the
    API and not the minute it ran in. Runs until the pairs took `seconds` per
    side and each side has `min_requests`.
    """
    base_cell, api_cell = interleaved([baseline, api], seconds, min_requests, batch)
    return base_cell, api_cell


def interleaved(makers: list[Callable], seconds: float, min_requests: int, batch: int) -> list[Cell]:
    """One request of each side per cycle, the order rotated every cycle; a Cell per side (see paired)."""
    calls = [make() for make in makers]
    for call in calls:
        call()  # warm: connection, kernels for this shape
    sides = len(calls)
    latencies: list[list[float]] = [[] for _ in calls]
    began = time.perf_counter()
    cycle = 0
    while cycle < min_requests or time.perf_counter() - began < sides * seconds:
        for k in range(sides):
            side = (cycle + k) % sides
            started = time.perf_counter()
            calls[side]()
            latencies[side].append(time.perf_counter() - started)
        cycle += 1
    return [Cell(taken, sum(taken), len(taken) * batch) for taken in latencies]


def closed_loop_rounds(
    calls: dict[str, Callable], concurrency: int, args, batch: int, rounds: int = 3
) -> dict[str, Cell]:
    """Every mode as closed loops, in alternating rounds, so load from elsewhere on the machine hits all alike."""
    totals = {mode: Cell([], 0.0, 0) for mode in calls}
    for _ in range(rounds):
        for mode, make_call in calls.items():
            part = closed_loop(
                make_call, concurrency, args.seconds / rounds, max(1, args.min_requests // rounds), batch
            )
            totals[mode].latencies += part.latencies
            totals[mode].seconds += part.seconds
            totals[mode].images += part.images
    return totals


def measure_cell(
    baseline: Callable, apis: dict[str, Callable], concurrency: int, args, batch: int
) -> tuple[dict[str, Cell], dict[str, Cell]]:
    """Each mode's cell ("in_process" and every API), and the baseline cell each API is compared with.

    At concurrency 1 each API is paired with its own in-process run (the table
    shows the first pairing's); above it, all share one set of rounds.
    """
    if concurrency == 1:
        pairs = {name: paired(baseline, api, args.seconds, args.min_requests, batch) for name, api in apis.items()}
        measured = {"in_process": next(iter(pairs.values()))[0]} | {name: pair[1] for name, pair in pairs.items()}
        return measured, {name: pair[0] for name, pair in pairs.items()}
    measured = closed_loop_rounds({"in_process": baseline, **apis}, concurrency, args, batch)
    return measured, {name: measured["in_process"] for name in apis}


def export_params_model(params, out: Path) -> Path:
    from petseg.components.ml.export import export_serving_model
    from petseg.components.ml.model import build_model

    model = build_model(dataclasses.replace(params.model, encoder_weights="none"), params.preprocess.image_size)
    return export_serving_model(model, out, params.preprocess.image_size)


def start_server(
    base: Path, params_file: Path, port: int, rest_port: int, show: Callable[[str], None]
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "petseg",
            "serve",
            "--params",
            str(params_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rest-port",
            str(rest_port),
            "--model-base-path",
            str(base),
            "--batching-parameters-file",
            "",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in iter(proc.stdout.readline, ""):
        if "listening on" in line:
            show(f"# {line.strip()}")
            return proc
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def measure(args: argparse.Namespace, show: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict:
    """Both closed loops for every image size x batch x concurrency; the figures as a dict.

    `show` gets the progress lines (server start, model, one table row per cell) as they come.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from petseg.serving.server import message_options

    params = load_params(args.params)
    if args.workers:
        params = with_overrides(params, {"serve.workers": args.workers})
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        if args.model:
            model_dir, what = args.model, str(args.model)
        else:
            model_dir = export_params_model(params, tmp / "export")
            what = f"{params.model.architecture} (untrained, encoder_weights none) at {params.preprocess.image_size} px"
        (tmp / "models" / "petseg").mkdir(parents=True)
        shutil.copytree(model_dir, tmp / "models" / "petseg" / "1")
        params_file = tmp / "params.yaml"
        params_file.write_text(yaml.safe_dump(params_to_dict(params)))
        signature = tf.saved_model.load(str(model_dir)).signatures[signatures.SIGNATURE_IMAGES]
        port, rest_port = free_ports(2)
        server = start_server(tmp / "models", params_file, port, rest_port, show)
        show(
            f"# model: {what}; server workers {params.serve.workers}; {os.cpu_count()} CPUs; "
            f"{args.seconds:g}s per cell and mode (at least {args.min_requests} requests)"
        )
        rng = np.random.default_rng(0)
        cells: list[dict] = []
        encoded_cells: list[dict] = []
        wire: dict[str, dict] = {}
        show(CELL_HEADER)
        show("-" * len(CELL_HEADER))
        try:
            for width, height in sizes:
                for batch in batches:
                    images = rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
                    request = predict_pb2.PredictRequest()
                    request.model_spec.name = "petseg"
                    request.model_spec.signature_name = signatures.SIGNATURE_IMAGES
                    request.output_filter.append(signatures.OUTPUT_MASK)
                    request.inputs[signatures.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(images))

                    def in_process_call(images=images):
                        def call():
                            out = signature(**{signatures.INPUT_IMAGES: tf.constant(images)})
                            return out[signatures.OUTPUT_MASK].numpy()

                        return call

                    def server_call(request=request):
                        channel = grpc.insecure_channel(
                            f"127.0.0.1:{port}", options=message_options(params.serve.max_message_mb)
                        )
                        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict

                        def call():
                            response = predict(request, timeout=600)
                            return tf.make_ndarray(response.outputs[signatures.OUTPUT_MASK])

                        return call

                    def rest_call(images=images):
                        body = pixel_body(images)
                        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=600)

                        def call():
                            connection.request(
                                "POST",
                                "/v1/models/petseg:predict",
                                body=body,
                                headers={"Content-Type": "application/json"},
                            )
                            response = connection.getresponse()
                            answer = orjson.loads(response.read())
                            if response.status != 200:
                                raise SystemExit(f"REST predict failed: {response.status} {answer}")
                            return np.asarray([p[signatures.OUTPUT_MASK] for p in answer["predictions"]], np.uint8)

                        return call

                    wire[f"{width}x{height}x{batch}"] = dict(
                        width=width,
                        height=height,
                        batch=batch,
                        grpc_pixels=grpc_wire_bytes(port, request),
                        rest_pixels=rest_wire_bytes(
                            rest_port, orjson.dumps({"instances": images}, option=orjson.OPT_SERIALIZE_NUMPY)
                        ),
                    )
                    for level in levels:
                        measured, baselines = measure_cell(
                            in_process_call, {"server": server_call, "rest": rest_call}, level, args, batch
                        )
                        cells.append(cell_figures(width, height, batch, level, measured, baselines))
                        show(cell_line(cells[-1]))
            show("")
            show(ENCODED_HEADER)
            show("-" * len(ENCODED_HEADER))
            for width, height in sizes:
                jpeg = photo_jpeg(width, height)
                forms = encoded_forms(model_dir, jpeg, port, rest_port, params.serve.max_message_mb)
                wire.setdefault(f"{width}x{height}x1", dict(width=width, height=height, batch=1)).update(
                    jpeg=len(jpeg),
                    grpc_bytes=grpc_wire_bytes(port, forms["grpc_bytes_request"]),
                    rest_png=rest_wire_bytes(rest_port, png_body(jpeg)),
                )
                for level in levels:
                    calls = {mode: forms[mode] for mode in ENCODED_MODES}
                    if level == min(levels):
                        measured = dict(
                            zip(
                                calls,
                                interleaved(list(calls.values()), args.seconds, args.min_requests, 1),
                                strict=True,
                            )
                        )
                    else:
                        measured = closed_loop_rounds(calls, level, args, 1)
                    encoded_cells.append(encoded_figures(width, height, level, len(jpeg), measured))
                    show(encoded_line(encoded_cells[-1]))
        finally:
            server.terminate()
            server.wait(timeout=60)
    return dict(
        model=what,
        server_workers=params.serve.workers,
        cpus=os.cpu_count(),
        seconds=args.seconds,
        min_requests=args.min_requests,
        cells=cells,
        load_after=os.getloadavg()[0],
        overhead_goal=OVERHEAD_GOAL,
        overhead=overhead_goals(cells, min(levels)),
        rest_overhead=overhead_goals(cells, min(levels), "rest"),
        tail_goal=TAIL_GOAL,
        tail=tail_goals(cells, max(levels)),
        encoded_cells=encoded_cells,
        png_goal=PNG_GOAL,
        png=png_goals(encoded_cells, min(levels)),
        wire=list(wire.values()),
    )


ENCODED_MODES = ("png_in_process", "grpc_bytes", "rest_png")


def photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like JPEG (smooth colour regions plus sensor-like noise) at JPEG_QUALITY: its size is a photo's."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def pixel_body(images: np.ndarray) -> bytes:
    """The row-form REST request for uint8 images through serving_default."""
    return orjson.dumps({"instances": images}, option=orjson.OPT_SERIALIZE_NUMPY)


def png_body(jpeg: bytes) -> bytes:
    """The REST request an app sends for one photo through serving_png."""
    import base64

    return orjson.dumps(
        {"signature_name": signatures.SIGNATURE_PNG, "instances": [{"b64": base64.b64encode(jpeg).decode()}]}
    )


def decode_png_mask(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


def encoded_forms(model_dir: Path, jpeg: bytes, port: int, rest_port: int, max_message_mb: int) -> dict:
    """Call makers for ENCODED_MODES (each returns the mask), plus the gRPC bytes request for the wire count."""
    import base64

    import grpc
    import requests
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from petseg.serving.server import message_options

    png_signature = tf.saved_model.load(str(model_dir)).signatures[signatures.SIGNATURE_PNG]

    def grpc_request():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "petseg"
        request.model_spec.signature_name = signatures.SIGNATURE_BYTES
        request.output_filter.append(signatures.OUTPUT_MASK)
        request.inputs[signatures.INPUT_BYTES].CopyFrom(tf.make_tensor_proto([jpeg], dtype=tf.string))
        return request

    def png_in_process():
        def call():
            out = png_signature(**{signatures.INPUT_BYTES: tf.constant([jpeg])})
            return decode_png_mask(out[signatures.OUTPUT_MASK_PNG].numpy()[0])

        return call

    def grpc_bytes():
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=message_options(max_message_mb))
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict

        def call():
            response = predict(grpc_request(), timeout=600)
            return tf.make_ndarray(response.outputs[signatures.OUTPUT_MASK])[0]

        return call

    def rest_png():
        session = requests.Session()
        url = f"http://127.0.0.1:{rest_port}/v1/models/petseg:predict"

        def call():
            response = session.post(url, data=png_body(jpeg), headers={"Content-Type": "application/json"}, timeout=600)
            if response.status_code != 200:
                raise SystemExit(f"REST PNG predict failed: {response.status_code} {response.text[:300]}")
            return decode_png_mask(base64.b64decode(orjson.loads(response.content)["predictions"][0]["b64"]))

        return call

    forms = dict(png_in_process=png_in_process, grpc_bytes=grpc_bytes, rest_png=rest_png)
    masks = [make()() for make in forms.values()]
    for mode, mask in zip(forms, masks, strict=True):  # every form answers the same mask, or the race is void
        if not np.array_equal(mask, masks[1]):
            raise SystemExit(f"bench_serving: {mode} answered another mask than gRPC bytes")
    return {**forms, "grpc_bytes_request": grpc_request()}


def grpc_wire_bytes(port: int, request) -> dict:
    """A gRPC form's payload per request: the PredictRequest and PredictResponse messages, serialized."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 2**30)]) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=600)
    return dict(request=request.ByteSize(), response=response.ByteSize())


def rest_wire_bytes(rest_port: int, body: bytes) -> dict:
    """A REST form's payload per request: the JSON request body and the JSON answer body."""
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=600)
    try:
        connection.request("POST", "/v1/models/petseg:predict", body=body, headers={"Content-Type": "application/json"})
        answer = connection.getresponse().read()
    finally:
        connection.close()
    return dict(request=len(body), response=len(answer))


def encoded_figures(width: int, height: int, level: int, jpeg_bytes: int, measured: dict[str, Cell]) -> dict:
    """One encoded-forms cell: p50/p95/p99 (ms) and images/s per mode, and REST PNG's p50 ratios."""
    figures: dict = dict(width=width, height=height, batch=1, concurrency=level, jpeg_bytes=jpeg_bytes)
    for mode, cell in measured.items():
        figures.update(
            {
                f"{mode}_requests": len(cell.latencies),
                f"{mode}_p50": cell.percentile(50),
                f"{mode}_p95": cell.percentile(95),
                f"{mode}_p99": cell.percentile(99),
                f"{mode}_throughput": cell.throughput,
            }
        )
    figures["rest_png_vs_grpc_bytes"] = figures["rest_png_p50"] / figures["grpc_bytes_p50"]
    figures["rest_png_vs_in_process"] = figures["rest_png_p50"] / figures["png_in_process_p50"]
    return figures


ENCODED_HEADER = (
    f"{'size':>8} {'conc':>4} {'JPEG kB':>7} | {'in-process PNG p50':>18} {'p99':>7} | "
    f"{'gRPC bytes p50':>14} {'p99':>7} | {'REST PNG p50':>12} {'p99':>7} {'img/s':>7} | "
    f"{'REST PNG / gRPC bytes':>21} {'/ in-process':>12}"
)


def encoded_line(c: dict) -> str:
    """An encoded-forms cell as one row under ENCODED_HEADER."""
    return (
        f"{c['width']}x{c['height']:<4} {c['concurrency']:>4} {c['jpeg_bytes'] / 1000:>7.1f} | "
        f"{c['png_in_process_p50']:>15.1f} ms {c['png_in_process_p99']:>7.1f} | "
        f"{c['grpc_bytes_p50']:>11.1f} ms {c['grpc_bytes_p99']:>7.1f} | "
        f"{c['rest_png_p50']:>9.1f} ms {c['rest_png_p99']:>7.1f} {c['rest_png_throughput']:>7.1f} | "
        f"{c['rest_png_vs_grpc_bytes']:>21.2f} {c['rest_png_vs_in_process']:>12.2f}"
    )


def png_goals(cells: list[dict], level: int) -> list[dict]:
    """REST PNG p50 / gRPC bytes p50 at concurrency `level` (paired), per image size, against PNG_GOAL."""
    return [
        dict(
            width=c["width"],
            height=c["height"],
            concurrency=level,
            ratio=c["rest_png_vs_grpc_bytes"],
            met=c["rest_png_vs_grpc_bytes"] <= PNG_GOAL,
        )
        for c in cells
        if c["concurrency"] == level
    ]


def cell_figures(
    width: int, height: int, batch: int, level: int, measured: dict[str, Cell], baselines: dict[str, Cell]
) -> dict:
    """One cell's latency percentiles (ms) and throughput (images/s): in-process, gRPC ("server") and REST.

    `{api}_ratio` is the API's p50 over the p50 of the in-process run it was
    measured beside (`{api}_baseline_p50`).
    """
    figures = dict(width=width, height=height, batch=batch, concurrency=level)
    for api, base in baselines.items():
        figures[f"{api}_baseline_p50"] = base.percentile(50)
        figures[f"{api}_ratio"] = measured[api].percentile(50) / base.percentile(50)
    for side, cell in measured.items():
        figures.update(
            {
                f"{side}_requests": len(cell.latencies),
                f"{side}_p50": cell.percentile(50),
                f"{side}_p95": cell.percentile(95),
                f"{side}_p99": cell.percentile(99),
                f"{side}_throughput": cell.throughput,
            }
        )
    return figures


CELL_HEADER = (
    f"{'size':>8} {'batch':>5} {'conc':>4} | {'in-process p50':>14} {'p95':>7} {'p99':>7} "
    f"{'img/s':>7} | {'gRPC p50':>10} {'p95':>7} {'p99':>7} {'img/s':>7} | "
    f"{'REST p50':>10} {'p95':>7} {'p99':>7} {'img/s':>7} | {'p50 ratio gRPC':>14} {'REST':>6}"
)


def cell_line(c: dict) -> str:
    """A cell as one row under CELL_HEADER."""
    return (
        f"{c['width']}x{c['height']:<4} {c['batch']:>5} {c['concurrency']:>4} | {c['in_process_p50']:>11.1f} ms "
        f"{c['in_process_p95']:>7.1f} {c['in_process_p99']:>7.1f} {c['in_process_throughput']:>7.1f} | "
        f"{c['server_p50']:>7.1f} ms {c['server_p95']:>7.1f} {c['server_p99']:>7.1f} "
        f"{c['server_throughput']:>7.1f} | {c['rest_p50']:>7.1f} ms {c['rest_p95']:>7.1f} {c['rest_p99']:>7.1f} "
        f"{c['rest_throughput']:>7.1f} | {c['server_ratio']:>14.2f} {c['rest_ratio']:>6.2f}"
    )


def overhead_goals(cells: list[dict], level: int, side: str = "server") -> list[dict]:
    """An API's added p50 latency at concurrency `level` (side "server" = gRPC, "rest"), against OVERHEAD_GOAL."""
    rows = []
    for c in cells:
        if c["concurrency"] == level:
            added = c[f"{side}_ratio"] - 1
            rows.append(
                dict(
                    width=c["width"],
                    height=c["height"],
                    batch=c["batch"],
                    concurrency=level,
                    added=added,
                    added_ms=c[f"{side}_p50"] - c[f"{side}_baseline_p50"],
                    met=added < OVERHEAD_GOAL,
                )
            )
    return rows


def tail_goals(cells: list[dict], level: int) -> list[dict]:
    """The server's p99/p50 at concurrency `level`, per image size and batch, against TAIL_GOAL."""
    rows = []
    for c in cells:
        if c["concurrency"] == level:
            ratio = c["server_p99"] / c["server_p50"]
            rows.append(
                dict(
                    width=c["width"],
                    height=c["height"],
                    batch=c["batch"],
                    concurrency=level,
                    ratio=ratio,
                    met=ratio < TAIL_GOAL,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    f = measure(args)
    if args.json:
        args.json.write_text(json.dumps(f, indent=1))
    print()
    report_goals(f)
    print(f"# load average after the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def report_goals(f: dict) -> None:
    """The goals' outcomes, and REST's overhead beside them (reported; the 15% goal is gRPC's)."""
    for api, key, goal in (
        ("gRPC", "overhead", f"goal < {OVERHEAD_GOAL:.0%}"),
        ("REST", "rest_overhead", "no goal: JSON carries every pixel as text, as TF Serving's REST API does"),
    ):
        if f.get(key):
            print(
                f"{api} overhead at concurrency {f[key][0]['concurrency']} "
                f"(p50 {api} / p50 in-process beside it - 1; {goal}):"
            )
        for g in f.get(key, []):
            verdict = ("ok" if g["met"] else "OVER") if api == "gRPC" else ""
            size = f"{g['width']}x{g['height']} batch {g['batch']}"
            print(f"  {size}: {g['added']:+.1%} ({g['added_ms']:+.1f} ms) {verdict}")
    if f["tail"]:
        print(f"gRPC tail at concurrency {f['tail'][0]['concurrency']} (p99 / p50; goal < {TAIL_GOAL:g}):")
    for g in f["tail"]:
        print(f"  {g['width']}x{g['height']} batch {g['batch']}: {g['ratio']:.2f} {'ok' if g['met'] else 'OVER'}")
    if f.get("png"):
        print(
            f"REST PNG vs gRPC bytes at concurrency {f['png'][0]['concurrency']}, paired "
            f"(p50 REST serving_png / p50 gRPC serving_bytes mask only; goal <= {PNG_GOAL:g}):"
        )
    for g in f.get("png", []):
        print(f"  {g['width']}x{g['height']}: {g['ratio']:.2f} {'ok' if g['met'] else 'OVER'}")
    if f.get("wire"):
        print("bytes on the wire per request (request + answer payload):")
    for w in f.get("wire", []):
        forms = [k for k in ("grpc_pixels", "rest_pixels", "grpc_bytes", "rest_png") if k in w]
        shown = ", ".join(f"{k} {w[k]['request']:,} + {w[k]['response']:,}" for k in forms)
        print(f"  {w['width']}x{w['height']} batch {w['batch']}: {shown}")


if __name__ == "__main__":
    main()

"""A bounded soak of the REST server by hostile and ordinary clients, on loopback, under an address-space cap.

Starts `petseg serve` in a subprocess whose address space is capped
(RLIMIT_AS, --as-limit-gib) over a tiny untrained U-Net (or --model), first
sends --burst large bodies at the same moment (the issue's six 60 MiB bodies),
then runs --clients client threads against 127.0.0.1 for --seconds (each stops
after --max-requests too), in four kinds, round-robin:

- large: POSTs a valid batch of images as row JSON of about --large-mib MiB
  (TF Serving's {"instances": [...]}; the same body object every time);
- small: POSTs one 64 x 64 image on a keep-alive connection, timing each answer;
- deep: POSTs JSON nested 1000 levels deep;
- drop: sends the headers of a --large-mib body and a part of it, then closes the socket.

A sampler reads the server's VmRSS and VmHWM from /proc/PID/status every
0.1 s. At the end it prints (and with --json writes) what each kind got,
the small requests' p50/p99 latency, the RSS figures, and the server's log
line counts, then checks:

- the server is still running;
- its VmHWM stayed under --rss-bound-mib (default: its RSS after warm-up plus
  --rss-growth-mib);
- every small request was answered 200;
- every deep request got 400 with a one-line {"error"};
- large requests got 200, 503 (budget full: refused at once) or 413, nothing else;
- the server log holds no traceback and at most one line per dropped client.

It exits 1 when a check fails. Only loopback addresses are used, every loop is
bounded by --seconds and --max-requests, and the server is stopped at the end.

    python bench/soak_rest.py [--clients 16] [--seconds 60] [--large-mib 60] [--as-limit-gib 8]
                              [--budget-mb 512] [--rss-growth-mib 3072] [--model SAVEDMODEL] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import yaml

HOST = "127.0.0.1"  # loopback only
PREDICT = "/v1/models/petseg:predict"
KINDS = ("large", "small", "deep", "drop")
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--burst", type=int, default=6, help="large bodies sent at the same moment before the soak")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the clients send")
    p.add_argument("--max-requests", type=int, default=200, help="per client")
    p.add_argument("--large-mib", type=float, default=60.0, help="size of a large body")
    p.add_argument("--as-limit-gib", type=float, default=8.0, help="the server's RLIMIT_AS")
    p.add_argument("--budget-mb", type=int, default=512, help="serve.rest_body_budget_mb")
    p.add_argument("--workers", type=int, default=4, help="serve.workers")
    p.add_argument("--rss-growth-mib", type=float, default=3072.0, help="allowed VmHWM above the warm RSS")
    p.add_argument("--rss-bound-mib", type=float, default=None, help="absolute VmHWM bound (overrides growth)")
    p.add_argument("--model", type=Path, default=None, help="a SavedModel (default: export a tiny untrained U-Net)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 0 < args.seconds <= 3600 and 1 <= args.max_requests <= 100_000):
        p.error("--clients 1..64, --seconds 0..3600 and --max-requests 1..100000")
    return args


# ------------------------------------------------------------------ bodies
def large_body(mib: float) -> tuple[bytes, int]:
    """A valid row-JSON batch of 4 random square images of about mib MiB, and its side."""
    side = max(16, int((mib * MIB / 4 / 12.6) ** 0.5))  # a random uint8 pixel is ~12.6 characters of JSON
    pixels = np.random.default_rng(0).integers(0, 256, (4, side, side, 3), dtype=np.uint8)
    return json.dumps({"instances": pixels.tolist()}, separators=(",", ":")).encode(), side


def small_body() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    return json.dumps({"instances": pixels.tolist()}).encode()


def deep_body() -> bytes:
    return b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"


# ------------------------------------------------------------------ clients
@dataclass
class Tally:
    statuses: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in KINDS})
    small_seconds: list[float] = field(default_factory=list)
    large_seconds: list[float] = field(default_factory=list)
    bad_answers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: object, seconds: float | None = None, problem: str | None = None) -> None:
        with self.lock:
            self.statuses[kind][str(status)] += 1
            if seconds is not None:
                (self.small_seconds if kind == "small" else self.large_seconds).append(seconds)
            if problem and len(self.bad_answers) < 20:
                self.bad_answers.append(problem)


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", PREDICT, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def run_client(kind: str, port: int, bodies: dict[str, bytes], deadline: float, max_requests: int, tally: Tally):
    """One client: up to max_requests requests of its kind until the deadline; every failure is tallied."""
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        for _ in range(max_requests):
            if time.monotonic() >= deadline:
                return
            if kind == "drop":
                tally.add(kind, drop_mid_body(port, len(bodies["large"]), bodies["large"][: 4 * MIB]))
                continue
            started = time.perf_counter()
            try:
                status, answer = post(connection, bodies[kind])
            except (OSError, http.client.HTTPException) as exc:
                tally.add(kind, type(exc).__name__, problem=f"{kind}: {type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=120)
                time.sleep(0.2)
                continue
            seconds = time.perf_counter() - started
            tally.add(kind, status, seconds if kind in ("small", "large") else None, _problem(kind, status, answer))
            if status == 503:
                time.sleep(0.5)  # as Retry-After asks (1 s), roughly: a client that keeps hammering is not the test
            if status != 200:
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=120)
    finally:
        connection.close()


def _problem(kind: str, status: int, answer: bytes) -> str | None:
    """What is wrong with an answer of this kind, or None."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return f"{kind}: {status} with a body that is not JSON: {answer[:80]!r}"
    if status != 200 and (set(parsed) != {"error"} or "\n" in parsed["error"]):
        return f"{kind}: {status} without a one-line error: {answer[:200]!r}"
    expected = {"small": {200}, "deep": {400}, "large": {200, 503, 413}}[kind]
    if status not in expected:
        return f"{kind}: {status} {answer[:200]!r}"
    return None


def drop_mid_body(port: int, declared: int, part: bytes) -> str:
    """Send a request's headers and part of its body, then close: the server must log one line at most."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        head = f"POST {PREDICT} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {declared}\r\n\r\n"
        try:
            sock.sendall(head.encode() + part)
        except OSError as exc:  # the server refused at once (503) and closed: also fine
            return type(exc).__name__
    time.sleep(0.05)
    return "dropped"


# ------------------------------------------------------------------- server
def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of pid in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def export_tiny_model(out: Path) -> Path:
    from petseg.components.core.params import ModelParams, UnetParams
    from petseg.components.ml.export import export_serving_model
    from petseg.components.ml.model import build_model

    model = build_model(
        ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=2)), 64
    )
    return export_serving_model(model, out, 64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(
    tmp: Path, model: Path, args: argparse.Namespace, log_file, out_lines: list[str]
) -> tuple[subprocess.Popen, int]:
    """`petseg serve` under the address-space cap: its stderr to log_file, its stdout lines into out_lines."""
    from petseg.components.core.params import Params, params_to_dict

    base = tmp / "models"
    shutil.copytree(model, base / "petseg" / "1")
    params = params_to_dict(Params())
    params["serve"].update(
        {
            "workers": args.workers,
            "rest_body_budget_mb": args.budget_mb,
            "batching_parameters_file": "",
            "max_image_pixels": 16_777_216,
        }
    )
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    port, rest_port = free_port(), free_port()
    limit = int(args.as_limit_gib * 2**30)

    def cap_address_space():  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "petseg", "serve", "--params", str(tmp / "params.yaml"), "--host", HOST),
            *("--port", str(port), "--rest-port", str(rest_port), "--model-base-path", str(base)),
        ],
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=cap_address_space,
    )
    for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
        if "listening on" in line:
            threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            return proc, rest_port
    raise SystemExit(f"the server did not start (exit {proc.wait()}); see its log")


# --------------------------------------------------------------------- soak
def soak(args: argparse.Namespace, show=lambda line: print(line, flush=True)) -> dict:
    """Run the soak; the figures and checks as a dict."""
    large, side = large_body(args.large_mib)
    bodies = {"large": large, "small": small_body(), "deep": deep_body()}
    show(f"# large body {len(large) / MIB:.1f} MiB (4 x {side} x {side} x 3), small {len(bodies['small'])} B")
    with tempfile.TemporaryDirectory(prefix="petseg-soak-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or export_tiny_model(tmp / "export")
        log_path = tmp / "server.log"
        out_lines: list[str] = []
        with open(log_path, "w") as log_file:
            proc, port = start_server(tmp, model, args, log_file, out_lines)
            try:
                figures = _drive(proc, port, bodies, args, show)
            finally:
                alive = proc.poll() is None
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log = log_path.read_text(errors="replace") + "".join(out_lines)
    figures["server_alive_at_end"] = alive
    figures["server_exit_code"] = None if alive else proc.returncode
    figures["log_lines"] = len(log.splitlines())
    figures["log_tracebacks"] = log.count("Traceback (most recent call last)")
    figures["log_client_lines"] = sum("REST client" in line for line in log.splitlines())
    figures["log_sample"] = [line for line in log.splitlines() if "REST client" in line][:3]
    figures["checks"] = _checks(figures)
    return figures


def _drive(proc: subprocess.Popen, port: int, bodies: dict, args: argparse.Namespace, show) -> dict:
    warm = http.client.HTTPConnection(HOST, port, timeout=120)
    for _ in range(3):  # the first calls trace the model and allocate its buffers
        post(warm, bodies["small"])
    status, _ = post(warm, bodies["large"])
    warm.close()
    warm_rss, _ = rss(proc.pid)
    show(f"# warm: large body answered {status}, server RSS {warm_rss / MIB:.0f} MiB")
    tally = Tally()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set() and proc.poll() is None:
            try:
                samples.append((time.monotonic(), *rss(proc.pid)))
            except (OSError, KeyError):
                return
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    burst = _burst(port, bodies["large"], args.burst)
    show(f"# burst of {args.burst} large bodies at once: {burst['statuses']} in {burst['seconds']:.1f} s")
    started = time.monotonic()
    deadline = started + args.seconds
    clients = [
        threading.Thread(
            target=run_client,
            args=(KINDS[i % len(KINDS)], port, bodies, deadline, args.max_requests, tally),
            daemon=True,
        )
        for i in range(args.clients)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=args.seconds + 300)  # bounded: a request in flight at the deadline may finish
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join(timeout=5)
    small = np.array(tally.small_seconds or [np.nan])
    bound = args.rss_bound_mib * MIB if args.rss_bound_mib else warm_rss + args.rss_growth_mib * MIB
    return {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "large_body_mib": round(len(bodies["large"]) / MIB, 1),
        "as_limit_gib": args.as_limit_gib,
        "budget_mb": args.budget_mb,
        "burst": burst,
        "statuses": {kind: dict(counts) for kind, counts in tally.statuses.items()},
        "small_answered": len(tally.small_seconds),
        "small_p50_s": round(float(np.percentile(small, 50)), 3),
        "small_p99_s": round(float(np.percentile(small, 99)), 3),
        "small_max_s": round(float(np.max(small)), 3),
        "large_p50_s": round(float(np.percentile(tally.large_seconds or [np.nan], 50)), 2),
        "warm_rss_mib": round(warm_rss / MIB),
        "max_rss_mib": round(max((s[1] for s in samples), default=0) / MIB),
        "hwm_mib": round(max((s[2] for s in samples), default=0) / MIB),
        "rss_bound_mib": round(bound / MIB),
        "bad_answers": tally.bad_answers,
    }


def _burst(port: int, body: bytes, count: int) -> dict:
    """count POSTs of body released at the same moment; their statuses (or errors) and how long the last took."""
    statuses: Counter = Counter()
    gate = threading.Barrier(count + 1)

    def one():
        connection = http.client.HTTPConnection(HOST, port, timeout=300)
        try:
            gate.wait(timeout=60)
            statuses[str(post(connection, body)[0])] += 1
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    gate.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=600)
    return {"count": count, "statuses": dict(statuses), "seconds": round(time.monotonic() - started, 1)}


def _checks(f: dict) -> dict[str, bool]:
    statuses = f["statuses"]
    return {
        "server stayed up": f["server_alive_at_end"],
        "VmHWM within the bound": 0 < f["hwm_mib"] <= f["rss_bound_mib"],
        "small requests all answered 200": f["small_answered"] > 0 and set(statuses["small"]) == {"200"},
        "deep JSON all 400": set(statuses["deep"]) <= {"400"} and bool(statuses["deep"]),
        "large bodies answered 200, 503 or 413 only": set(statuses["large"]) | set(f["burst"]["statuses"])
        <= {"200", "503", "413"},
        "every answer well formed": not f["bad_answers"],
        "no traceback in the server log": f["log_tracebacks"] == 0,
        "at most one log line per dropped client": f["log_client_lines"] <= sum(statuses["drop"].values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = soak(args)
    print(json.dumps({k: v for k, v in figures.items() if k != "checks"}, indent=1))
    for name, ok in figures["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if all(figures["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

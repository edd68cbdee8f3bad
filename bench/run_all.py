"""Run every benchmark and write bench/RESULTS.md: the figures, the goals, and the machine they ran on.

Each benchmark script (bench_preprocess.py, bench_train.py, bench_serving.py)
runs in its own Python process, one after the other, as it would alone (fresh
TensorFlow state, its own memory), and hands its figures back through its
`--json FILE` option; its own printout goes to stderr as progress. This script
then writes one Markdown table per benchmark, with the ratios against the
baseline measured in the same run and whether each goal is met, under a
heading that names the date, the machine (CPU, cores, memory, GPUs that
TensorFlow sees, Python/TensorFlow versions, load average before and after)
and the command. The Markdown goes to --out and to stdout.

    python bench/run_all.py [--quick] [--out bench/RESULTS.md]

--quick uses small sizes (a few minutes on 2 busy cores); the default sizes
are each script's own defaults. Exit status 1 if a benchmark failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    quick_args: tuple[str, ...]
    full_args: tuple[str, ...] = ()


BENCHMARKS = (
    # Fewer images than 1500 and the parallel run's start-up hides the speed-up on 2 cores.
    Benchmark("preprocess", "bench_preprocess.py", ("--examples", "1500")),
    Benchmark(
        "train",
        "bench_train.py",
        ("--examples", "128", "--batch-size", "32", "--steps", "6", "--pipeline-batches", "20"),
    ),
    Benchmark(
        "serving",
        "bench_serving.py",
        (
            "--seconds",
            "1.5",
            "--min-requests",
            "15",
            "--sizes",
            "128x128,500x375",
            "--batches",
            "1",
            "--concurrency",
            "1,16",
        ),
    ),
)


@dataclass
class Run:
    """One benchmark's outcome: its command, wall time, exit status and figures (None if it wrote none)."""

    name: str
    command: list[str]
    seconds: float
    returncode: int
    figures: dict | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.figures is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 busy cores")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md", help="the Markdown file to write")
    return p.parse_args(argv)


# ------------------------------------------------------------------- running
def run_benchmark(bench: Benchmark, quick: bool, workdir: Path) -> Run:
    """Run one benchmark script in a fresh Python process; its printout goes to our stderr."""
    figures_file = workdir / f"{bench.name}.json"
    command = [
        sys.executable,
        str(BENCH_DIR / bench.script),
        *(bench.quick_args if quick else bench.full_args),
        "--json",
        str(figures_file),
    ]
    print(f"== {bench.name}: {shlex.join(display_command(command))}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    returncode = subprocess.run(command, cwd=REPO_ROOT, stdout=sys.stderr, stderr=sys.stderr).returncode
    seconds = time.perf_counter() - start
    figures = json.loads(figures_file.read_text()) if figures_file.exists() else None
    print(f"== {bench.name}: exit {returncode} after {seconds:.0f} s", file=sys.stderr, flush=True)
    return Run(bench.name, command, seconds, returncode, figures)


def display_command(command: list[str]) -> list[str]:
    """The command as a user would type it to see the same figures: `python`, paths relative to the
    repository, and without the `--json FILE` that hands the figures to this script."""
    shown = ["python"]
    parts = iter(command[1:])
    for part in parts:
        if part == "--json":
            next(parts, None)
            continue
        path = Path(part)
        shown.append(
            str(path.relative_to(REPO_ROOT)) if path.is_absolute() and path.is_relative_to(REPO_ROOT) else part
        )
    return shown


# ------------------------------------------------------------------- machine
def machine_info() -> dict:
    """CPU model, cores, memory, load average, Python, and TensorFlow's version and GPUs (asked in a subprocess)."""
    return dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)),
        memory_gib=memory_gib(),
        python=platform.python_version(),
        system=platform.platform(terse=True),
        **tensorflow_info(),
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


_TF_QUERY = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow as tf
gpus = [tf.config.experimental.get_device_details(d).get("device_name", d.name)
        for d in tf.config.list_physical_devices("GPU")]
print(json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__, "gpus": gpus}))
"""


def tensorflow_info() -> dict:
    """TensorFlow/Keras versions and GPU names, from a short-lived process so this one holds no GPU context."""
    done = subprocess.run([sys.executable, "-c", _TF_QUERY], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return dict(tensorflow="unavailable", keras="unavailable", gpus=[])
    return json.loads(lines[-1])


def git_revision() -> str:
    """The short commit, with '+ uncommitted changes' when the tree differs from it; '' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return commit + (" + uncommitted changes" if dirty else "")


# ------------------------------------------------------------------- Markdown
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside cells is escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])


def met(flag: bool) -> str:
    return "yes" if flag else "**no**"


def preprocess_section(f: dict) -> tuple[str, list[bool]]:
    """The preprocess table (1 worker = baseline) and its goal outcomes."""
    n, workers = f["images"], f["workers"]
    intro = (
        f"{n} synthetic images (200-500 px) -> {f['image_size']} px, {f['examples_per_shard']} per shard; "
        f"{f['cores']} cores; load average {f['load_before']:.2f} before / {f['load_after']:.2f} after."
    )
    rows = [
        ["Wall time (s)", f"{f['serial_s']:.2f}", f"{f['parallel_s']:.2f}", "", "", ""],
        [
            "Throughput (images/s)",
            f"{n / f['serial_s']:.1f}",
            f"{n / f['parallel_s']:.1f}",
            f"{f['speedup']:.2f}x",
            f"> {f['speedup_goal']:g}x with all cores (ideal {workers}x)",
            met(f["speedup_met"]),
        ],
        [
            "CPU time (s)",
            f"{f['serial_cpu_s']:.2f}",
            f"{f['parallel_cpu_s']:.2f}",
            f"{f['parallel_cpu_s'] / f['serial_cpu_s']:.2f}x",
            "",
            "",
        ],
        [
            "Output (shards + manifest)",
            "",
            "identical" if f["identical"] else "DIFFERENT",
            "",
            "byte-identical to 1 worker",
            met(f["identical"]),
        ],
    ]
    table = markdown_table(["Figure", "1 worker (baseline)", f"{workers} workers", "Ratio", "Goal", "Met"], rows)
    return f"{intro}\n\n{table}", [f["speedup_met"], f["identical"]]


def train_section(f: dict) -> tuple[str, list[bool]]:
    """The training table (the seed tutorial's recipe = baseline) and its goal outcomes."""
    p, s = "project", "seed"
    intro = (
        f"{f['examples']} synthetic photos (200-500 px) -> {f['image_size']} px, batch {f['batch_size']}, "
        f"mobilenetv2_unet (frozen encoder); best of {f['rounds']} alternating rounds "
        f"({f['pipeline_batches']} pipeline batches, {f['steps']} training steps each); "
        f"{f['gpus']} GPU(s), {f['cpus']} CPUs; load average {f['load_after']:.2f} after."
    )
    rows = [
        [
            "First epoch, input pipeline (s)",
            f"{f['first_epoch_s'][p]:.2f}",
            f"{f['first_epoch_s'][s]:.2f}",
            f"{f['first_epoch_s'][p] / f['first_epoch_s'][s]:.2f}x",
            "",
            "",
        ],
        [
            "Input pipeline, warm (images/s)",
            f"{f['pipeline'][p]:.1f}",
            f"{f['pipeline'][s]:.1f}",
            f"{f['pipeline_ratio']:.2f}x",
            "",
            "",
        ],
        [
            "Training (images/s)",
            f"{f['training'][p]:.2f}",
            f"{f['training'][s]:.2f}",
            f"{f['training_ratio']:.2f}x",
            f">= {f['training_ratio_goal']:g}x seed",
            met(f["training_ratio_met"]),
        ],
        [
            "Pipeline / training step consumption",
            f"{f['headroom']:.1f}x",
            f"{f['pipeline'][s] / f['training'][s]:.1f}x",
            "",
            f"project >= {f['headroom_goal']:g}x",
            met(f["headroom_met"]),
        ],
    ]
    table = markdown_table(["Figure", "Project", "Seed recipe (baseline)", "Project / seed", "Goal", "Met"], rows)
    return f"{intro}\n\n{table}", [f["training_ratio_met"], f["headroom_met"]]


def serving_section(f: dict) -> tuple[str, list[bool]]:
    """The serving table (in-process inference = baseline), one row per cell, and its goal outcomes."""
    goals: dict[tuple, list[tuple[str, bool]]] = {}
    for g in f["overhead"]:
        goals.setdefault((g["width"], g["height"], g["batch"], g["concurrency"]), []).append(
            (f"added p50 < {f['overhead_goal']:.0%}: {g['added']:+.1%} ({g['added_ms']:+.1f} ms)", g["met"])
        )
    for g in f["tail"]:
        goals.setdefault((g["width"], g["height"], g["batch"], g["concurrency"]), []).append(
            (f"p99/p50 < {f['tail_goal']:g}: {g['ratio']:.2f}", g["met"])
        )
    intro = (
        f"Model: {f['model']}; gRPC server with {f['server_workers']} workers on the same machine as the client; "
        f"{f['seconds']:g} s per cell and side (at least {f['min_requests']} requests); at concurrency 1 each API "
        "alternates request by request with in-process inference, its baseline; above it, 3 alternating rounds; "
        f"{f['cpus']} CPUs; load average {f['load_after']:.2f} after. Latencies in ms per request."
    )
    rows = []
    for c in f["cells"]:
        cell_goals = goals.get((c["width"], c["height"], c["batch"], c["concurrency"]), [])
        rows.append(
            [
                f"{c['width']}x{c['height']}",
                str(c["batch"]),
                str(c["concurrency"]),
                f"{c['in_process_p50']:.1f} / {c['in_process_p99']:.1f}",
                f"{c['server_p50']:.1f} / {c['server_p99']:.1f}",
                f"{c['rest_p50']:.1f} / {c['rest_p99']:.1f}",
                f"{c['in_process_throughput']:.1f}",
                f"{c['server_throughput']:.1f}",
                f"{c['server_ratio']:.2f}x",
                f"{c['rest_ratio']:.2f}x",
                "; ".join(text for text, _ in cell_goals),
                " / ".join(met(ok) for _, ok in cell_goals),
            ]
        )
    table = markdown_table(
        [
            "Image",
            "Batch",
            "Concurrency",
            "In-process p50 / p99 (baseline)",
            "gRPC p50 / p99",
            "REST p50 / p99",
            "In-process images/s",
            "gRPC images/s",
            "gRPC / in-process p50",
            "REST / in-process p50",
            "Goal",
            "Met",
        ],
        rows,
    )
    encoded, encoded_goals = encoded_section(f)
    wire = wire_section(f)
    parts = [intro, table, encoded, wire]
    return "\n\n".join(p for p in parts if p), [g["met"] for g in f["overhead"] + f["tail"]] + encoded_goals


def encoded_section(f: dict) -> tuple[str, list[bool]]:
    """The encoded forms (JPEG in, mask out): in-process serving_png, gRPC serving_bytes, REST serving_png."""
    cells = f.get("encoded_cells") or []
    if not cells:
        return "", []
    goals = {(g["width"], g["height"], g["concurrency"]): g for g in f.get("png", [])}
    intro = (
        "Encoded forms, batch 1: a photo-like JPEG (quality 90) in, the mask out. gRPC bytes = `serving_bytes` with "
        'output_filter `mask`; REST PNG = `serving_png` over REST with `requests` ({"b64": JPEG} in, {"b64": PNG} '
        "out, decoded); in-process PNG = the SavedModel's `serving_png` called directly. At the lowest concurrency "
        "the three alternate request by request (the order rotating), so other load on the machine hits all alike; "
        "above it, 3 alternating rounds. Latencies in ms per request."
    )
    rows = []
    for c in cells:
        goal = goals.get((c["width"], c["height"], c["concurrency"]))
        rows.append(
            [
                f"{c['width']}x{c['height']}",
                str(c["concurrency"]),
                f"{c['jpeg_bytes'] / 1000:.1f}",
                f"{c['png_in_process_p50']:.1f} / {c['png_in_process_p99']:.1f}",
                f"{c['grpc_bytes_p50']:.1f} / {c['grpc_bytes_p99']:.1f}",
                f"{c['rest_png_p50']:.1f} / {c['rest_png_p99']:.1f}",
                f"{c['grpc_bytes_throughput']:.1f}",
                f"{c['rest_png_throughput']:.1f}",
                f"{c['rest_png_vs_grpc_bytes']:.2f}x",
                f"{c['rest_png_vs_in_process']:.2f}x",
                f"<= {f['png_goal']:g}x gRPC bytes" if goal else "",
                met(goal["met"]) if goal else "",
            ]
        )
    table = markdown_table(
        [
            "Image",
            "Concurrency",
            "JPEG kB",
            "In-process PNG p50 / p99",
            "gRPC bytes p50 / p99 (baseline)",
            "REST PNG p50 / p99",
            "gRPC bytes images/s",
            "REST PNG images/s",
            "REST PNG / gRPC bytes p50",
            "REST PNG / in-process p50",
            "Goal",
            "Met",
        ],
        rows,
    )
    return f"{intro}\n\n{table}", [g["met"] for g in f.get("png", [])]


WIRE_FORMS = (
    ("grpc_pixels", "gRPC pixels (`serving_default`, mask only)"),
    ("rest_pixels", "REST pixels (`serving_default`, JSON numbers, every output)"),
    ("grpc_bytes", "gRPC bytes (`serving_bytes`, mask only)"),
    ("rest_png", "REST PNG (`serving_png`, b64)"),
)


def wire_section(f: dict) -> str:
    """Bytes on the wire per request, request + answer payload, for every API and form measured."""
    wire = f.get("wire") or []
    if not wire:
        return ""
    rows = [
        [
            label,
            f"{w['width']}x{w['height']}",
            str(w["batch"]),
            f"{w[form]['request']:,}",
            f"{w[form]['response']:,}",
            f"{w[form]['request'] + w[form]['response']:,}",
        ]
        for form, label in WIRE_FORMS
        for w in wire
        if form in w
    ]
    intro = (
        "Bytes on the wire per request: the payload (gRPC: the serialized PredictRequest/PredictResponse; "
        "REST: the JSON bodies), without HTTP/2 or HTTP/1.1 framing and headers."
    )
    return f"{intro}\n\n" + markdown_table(
        ["API and form", "Image", "Batch", "Request bytes", "Answer bytes", "Total"], rows
    )


SECTIONS = {
    "preprocess": ("Preprocess: 1 worker vs all cores (`bench/bench_preprocess.py`)", preprocess_section),
    "train": (
        "Training input pipeline and training: project vs the seed recipe (`bench/bench_train.py`)",
        train_section,
    ),
    "serving": (
        "Serving over gRPC and REST vs in-process inference, pixel and encoded forms (`bench/bench_serving.py`)",
        serving_section,
    ),
}


def results_markdown(
    machine: dict,
    command: str,
    quick: bool,
    runs: list[Run],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    when: datetime.datetime,
    revision: str = "",
) -> str:
    """The whole RESULTS.md: heading with date, machine and command, then one section per benchmark."""
    gpus = machine["gpus"]
    gpu_text = ", ".join(gpus) if gpus else "none seen by TensorFlow"
    memory = f"{machine['memory_gib']:.1f} GiB" if machine.get("memory_gib") else "unknown"
    sections, outcomes = [], []
    for run in runs:
        title, render = SECTIONS[run.name]
        command_line = f"`{shlex.join(display_command(run.command))}` ({run.seconds:.0f} s)"
        if run.figures is None:
            body = f"**Failed** (exit {run.returncode}) before writing figures; run the command above to see why."
        else:
            body, goal_flags = render(run.figures)
            outcomes += goal_flags
            if run.returncode != 0:
                body = f"**Exited {run.returncode}.**\n\n{body}"
        sections.append(f"## {title}\n\n{command_line}\n\n{body}")
    mode = "quick mode: small sizes, indicative figures" if quick else "full mode: each script's default sizes"
    cores = machine["cores"]
    summary = (
        f"{'Quick' if quick else 'Full'} mode on a {cores}-core "
        f"{'CPU-only machine with no GPU' if not gpus else f'machine with {len(gpus)} GPU(s)'}. "
        f"Goals met: {sum(outcomes)} of {len(outcomes)}"
        + ("" if all(run.ok for run in runs) else f"; {sum(not r.ok for r in runs)} benchmark(s) failed")
        + "."
    )
    load = "load average (1/5/15 min) {} before, {} after".format(
        *("/".join(f"{v:.2f}" for v in values) for values in (load_before, load_after))
    )
    heading = [
        "# Benchmark results",
        "",
        summary,
        "",
        f"- Date: {when.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Command: `{command}` ({mode})",
        *([f"- Code: commit {revision}"] if revision else []),
        f"- CPU: {machine['cpu']}, {cores} cores ({machine['usable_cores']} usable by this process)",
        f"- Memory: {memory}",
        f"- GPU: {gpu_text}",
        f"- Software: Python {machine['python']}, TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
        f"{machine['system']}",
        f"- Machine load: {load} (other work on the machine slows both sides of each comparison alike; "
        "absolute figures move with it)",
    ]
    return "\n".join(heading) + "\n\n" + "\n\n".join(sections) + "\n"


def write_text_atomically(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    os.replace(staged, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "bench/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    when = datetime.datetime.now(datetime.UTC)
    machine = machine_info()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp:
        runs = [run_benchmark(bench, args.quick, Path(tmp)) for bench in BENCHMARKS]
    load_after = os.getloadavg()
    text = results_markdown(machine, command, args.quick, runs, load_before, load_after, when, git_revision())
    write_text_atomically(args.out, text)
    print(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

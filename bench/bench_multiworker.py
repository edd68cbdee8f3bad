"""Training with one worker against N local workers (MultiWorkerMirroredStrategy), the same records and params.

Both sides run the real command, `petseg train`, in fresh processes, one after
the other, on the same synthetic records and params (a small `unet`):

- baseline: one process, no TF_CONFIG (the default strategy on the CPU,
  MirroredStrategy on GPUs);
- N workers: `petseg train --local-workers N`, N processes on 127.0.0.1 that
  all-reduce gradients every step; the global batch is the same, so each
  worker computes 1/N of it.

Printed: wall time of the whole command (start-up, strategy set-up, export
included), the steady epoch time (the mean of the epochs after the first, as
Keras reports them on the chief, in whole seconds: use enough examples), training throughput from it, and the ratios
N workers / baseline. On one machine the workers share its cores, so a CPU
host can show no gain (or a loss: the all-reduce and N copies of the input
pipeline cost CPU); the figure that matters for a cluster is the per-step
all-reduce overhead, which this shows. Workers on separate GPU nodes are
what multi-worker training is for; no such cluster is measured here.

    python bench/bench_multiworker.py [--workers 2] [--examples 256] [--image-size 64] [--batch-size 32]
                                      [--epochs 3] [--base-filters 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import yaml

# The tests' tiny synthetic records writer: shards plus the manifest train reads, one place for both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import write_synthetic_records

EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - (\d+(?:\.\d+)?)(ms|s) - ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="local workers to compare with one process")
    p.add_argument("--examples", type=int, default=256, help="training examples (val: a quarter of that)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32, help="global batch, the same on both sides")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--base-filters", type=int, default=8, help="unet base filters (depth 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def params_file(path: Path, args: argparse.Namespace) -> Path:
    """params.yaml: the project's, with a small unet and this run's epochs and batch, no early stopping."""
    from petseg.components.core.params import Params, params_to_dict

    raw = params_to_dict(Params())
    raw["model"].update(
        architecture="unet",
        encoder_weights="none",
        unet={"base_filters": args.base_filters, "depth": 3, "batch_norm": True},
    )
    raw["train"].update(
        epochs=args.epochs,
        batch_size=args.batch_size,
        early_stopping_patience=0,
        reduce_lr_patience=0,
        learning_rate=0.01,
    )
    path.write_text(yaml.safe_dump(raw))
    return path


def run_train(work: Path, records: Path, params: Path, tag: str, workers: int | None) -> dict:
    """Run `petseg train` once; wall seconds and Keras' per-epoch seconds (the chief's lines)."""
    command = [
        sys.executable,
        "-m",
        "petseg",
        "train",
        "--records",
        str(records),
        "--out",
        str(work / tag / "models"),
        "--live",
        str(work / tag / "dvclive"),
        "--params",
        str(params),
    ]
    if workers:
        command += ["--local-workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_multiworker: {tag} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    epochs = []
    for line in (done.stdout + "\n" + done.stderr).splitlines():  # Keras prints epochs on stdout
        match = EPOCH_LINE.match(line)
        if match:
            epochs.append(float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0))
    return {"wall_s": wall, "epoch_s": epochs}


def measure(args: argparse.Namespace) -> dict:
    counts = {"train": args.examples, "val": max(args.batch_size, args.examples // 4)}
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        work = Path(tmp)
        records = write_synthetic_records(work / "records", args.image_size, counts, examples_per_shard=32, seed=7)
        params = params_file(work / "params.yaml", args)
        load_before = os.getloadavg()[0]
        one = run_train(work, records, params, "one", None)
        many = run_train(work, records, params, f"{args.workers}-workers", args.workers)
    figures = {
        "workers": args.workers,
        "examples": args.examples,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "base_filters": args.base_filters,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    for name, run in (("one", one), ("many", many)):
        steady = run["epoch_s"][1:] or run["epoch_s"]
        figures[name] = {
            "wall_s": run["wall_s"],
            "epoch_s": run["epoch_s"],
            "steady_epoch_s": float(np.mean(steady)),
            "images_per_s": args.examples / float(np.mean(steady)),
        }
    figures["throughput_ratio"] = figures["many"]["images_per_s"] / figures["one"]["images_per_s"]
    figures["wall_ratio"] = figures["many"]["wall_s"] / figures["one"]["wall_s"]
    return figures


def report(f: dict) -> str:
    n = f["workers"]
    rows = [
        ("Wall time, whole command (s)", f["one"]["wall_s"], f["many"]["wall_s"], f["wall_ratio"]),
        (
            "Steady epoch (s)",
            f["one"]["steady_epoch_s"],
            f["many"]["steady_epoch_s"],
            f["many"]["steady_epoch_s"] / f["one"]["steady_epoch_s"],
        ),
        ("Training throughput (images/s)", f["one"]["images_per_s"], f["many"]["images_per_s"], f["throughput_ratio"]),
    ]
    lines = [
        f"{f['examples']} train images at {f['image_size']} px, global batch {f['batch_size']}, unet base "
        f"{f['base_filters']} depth 3, {f['epochs']} epochs; {f['cpus']} CPUs; load average "
        f"{f['load_before']:.2f} before / {f['load_after']:.2f} after",
        "",
        f"| Figure | 1 worker (baseline) | {n} local workers | {n} workers / baseline |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {r:.2f}x |" for name, a, b, r in rows]
    lines.append(f"\nEpoch times (s): 1 worker {f['one']['epoch_s']}, {n} workers {f['many']['epoch_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

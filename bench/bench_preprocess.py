"""Preprocess throughput: images/s with 1 worker and with all cores, and the speed-up.

Builds a synthetic raw dataset (the `synthetic` download source, 200-500 px photos
like the real ones) in a temporary folder, writes a passing validation summary for
it (the validation contract, components/contracts/validation.py), then times `preprocess` twice on the same data:
once with 1 worker (in this process) and once with one worker process per core.
Both runs must write byte-identical folders. TensorFlow is imported before timing, so the
1-worker baseline is not charged for it; the parallel run includes its workers'
start-up, as a user would see it. CPU seconds (this process + its workers) and the
load average are printed too: on a machine shared with other work the wall-clock
speed-up says little unless the cores were free.

    python bench/bench_preprocess.py [--examples 2000] [--image-size 128] [--workers 0] [--json FILE]

`measure(args)` returns the figures as a dict (`--json FILE` writes them too),
which `bench/run_all.py` puts into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from petseg.components.contracts.rawdata import dataset_fingerprint
from petseg.components.contracts.validation import ValidationSummary, write_summary
from petseg.components.core.params import DataParams, PreprocessParams, SyntheticParams
from petseg.components.download import download
from petseg.components.preprocess import preprocess, resolve_workers

SPEEDUP_GOAL = 1.0  # all cores must beat 1 worker (ideal: the number of workers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=2000, help="synthetic images in all (80%% trainval, 20%% test)")
    p.add_argument("--image-size", type=int, default=PreprocessParams().image_size)
    p.add_argument("--examples-per-shard", type=int, default=PreprocessParams().examples_per_shard)
    p.add_argument("--workers", type=int, default=0, help="workers of the parallel run (0 = one per core)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def make_validated_raw(root: Path, examples: int) -> tuple[Path, Path]:
    """A synthetic raw dataset and a passing validation summary for it."""
    test = max(1, examples // 5)
    data = DataParams(
        source="synthetic", seed=1, synthetic=SyntheticParams(train_examples=examples - test, test_examples=test)
    )
    raw = download(data, root / "raw").out_dir
    report = root / "validation"
    write_summary(report, ValidationSummary(success=True, fingerprint=dataset_fingerprint(raw)))
    return raw, report


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_run(raw: Path, report: Path, out: Path, params: PreprocessParams) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, images written, workers used) for one preprocess run."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = preprocess(raw, report, params, out)
    return time.perf_counter() - start, cpu_seconds() - start_cpu, sum(result.counts.values()), result.workers


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def measure(args: argparse.Namespace) -> dict:
    """Time preprocess with 1 worker and with all cores on one synthetic dataset; the figures as a dict."""
    import tensorflow  # noqa: F401  (imported up front: see the module docstring)

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        raw, report = make_validated_raw(tmp, args.examples)
        print(
            f"generated {args.examples} synthetic images (200-500 px) in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )

        base = dict(image_size=args.image_size, examples_per_shard=args.examples_per_shard, val_fraction=0.1, seed=42)
        load_before = os.getloadavg()[0]
        serial_s, serial_cpu, images, _ = timed_run(raw, report, tmp / "one", PreprocessParams(**base, workers=1))
        parallel_s, parallel_cpu, _, workers = timed_run(
            raw, report, tmp / "all", PreprocessParams(**base, workers=args.workers)
        )
        load_after = os.getloadavg()[0]
        same = _folder_bytes(tmp / "one") == _folder_bytes(tmp / "all")
    return dict(
        images=images,
        image_size=args.image_size,
        examples_per_shard=args.examples_per_shard,
        cores=resolve_workers(0),
        workers=workers,
        load_before=load_before,
        load_after=load_after,
        serial_s=serial_s,
        serial_cpu_s=serial_cpu,
        parallel_s=parallel_s,
        parallel_cpu_s=parallel_cpu,
        speedup=serial_s / parallel_s,
        speedup_goal=SPEEDUP_GOAL,
        speedup_met=serial_s / parallel_s > SPEEDUP_GOAL,
        identical=same,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    f = measure(args)
    if args.json:
        args.json.write_text(json.dumps(f, indent=1))
    images, workers = f["images"], f["workers"]
    print(
        f"preprocess benchmark: {images} images -> {f['image_size']} px, "
        f"{f['examples_per_shard']} per shard, {f['cores']} cores available, "
        f"load average {f['load_before']:.1f} before / {f['load_after']:.1f} after"
    )
    print(
        f"  1 worker  : {f['serial_s']:7.2f} s  {images / f['serial_s']:8.1f} images/s  "
        f"(CPU {f['serial_cpu_s']:6.2f} s)"
    )
    print(
        f"  {workers} workers : {f['parallel_s']:7.2f} s  {images / f['parallel_s']:8.1f} images/s  "
        f"(CPU {f['parallel_cpu_s']:6.2f} s)"
    )
    print(f"  speed-up  : {f['speedup']:.2f}x with {workers} workers (ideal {workers}x, goal > {SPEEDUP_GOAL:g}x)")
    print(f"  identical output (shards + manifest): {f['identical']}")
    return 0 if f["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The first measurements on a GPU: training speed at three precisions, share of peak, input headroom, serving.

Run by bench/gpu_check.sh after it installed the project (see docs/gpu-check.md);
it can run alone in an environment that already has petseg with TensorFlow.

On a GPU it measures, for the params.yaml model (untrained weights; the
compute is what matters) at the params image size:

- training images/s in float32 (TF32 on the tensor cores of Ampere and
  later, TensorFlow's default), mixed_float16, and mixed_float16 with XLA
  (jit_compile); synthetic batches already on the GPU, so the figure is the
  model's, not the input pipeline's;
- the model's FLOPs per image (forward pass, TensorFlow's profiler on the
  frozen graph, a multiply-add counted as 2) and the training FLOPs per
  image (3x forward: the backward pass costs about twice the forward), and
  from them the fraction of the GPU's dense tensor-core peak each run
  reached (PEAKS: the datasheet figure and its source are printed);
- the input pipeline's images/s (the project's tf.data pipeline over
  TFRecords of synthetic photos, warm cache) over the fastest training
  images/s: its headroom at GPU speed;
- serving p50 at 500x375, batch 1: in-process serving_png, gRPC
  serving_bytes (mask only) and REST serving_png through `petseg serve`,
  paired request by request (bench/bench_serving.py's code).

--smoke (CI, or no GPU): tiny sizes on the CPU; the FLOPs count and a
float32 training step and pipeline run exercise the code, every GPU row is
skipped with a line saying so. Writes --out (default bench/RESULTS-gpu.md).

    python bench/gpu_check.py [--smoke] [--out FILE] [--install-note TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import numpy as np  # noqa: E402

SKIPPED_LINE = "GPU rows skipped: {reason}; run `bash bench/gpu_check.sh` on a machine with an NVIDIA GPU for them."


@dataclasses.dataclass(frozen=True)
class Peak:
    """A GPU's dense tensor-core peaks in TFLOP/s (without the 2:4 sparsity the datasheets headline)."""

    name: str
    fp16: float  # FP16/BF16 tensor core, dense
    fp32: float  # what float32 training runs at: TF32 tensor core (Ampere and later) or plain FP32
    fp32_kind: str
    source: str


# Matched in order against the device name TensorFlow reports; the datasheets give sparse figures, halved here.
PEAKS = (
    (
        "H100 PCIe",
        Peak("H100 PCIe", 756.5, 378.0, "TF32", "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: "
             "FP16/BF16 1,513 and TF32 756 TFLOPS with sparsity"),
    ),
    (
        "H100 NVL",
        Peak("H100 NVL", 835.5, 417.5, "TF32", "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL: "
             "FP16/BF16 1,671 and TF32 835 TFLOPS with sparsity"),
    ),
    (
        "H100",
        Peak("H100 SXM", 989.5, 494.5, "TF32", "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: "
             "FP16/BF16 1,979 and TF32 989 TFLOPS with sparsity"),
    ),
    (
        "H200",
        Peak("H200 SXM", 989.5, 494.5, "TF32", "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: "
             "FP16/BF16 1,979 and TF32 989 TFLOPS with sparsity"),
    ),
    (
        "A100",
        Peak("A100", 312.0, 156.0, "TF32", "NVIDIA A100 Tensor Core GPU datasheet: "
             "FP16/BF16 312 (624 with sparsity) and TF32 156 (312) TFLOPS"),
    ),
    (
        "L4",
        Peak("L4", 121.0, 60.0, "TF32", "NVIDIA L4 Tensor Core GPU datasheet: "
             "FP16/BF16 242 and TF32 120 TFLOPS with sparsity"),
    ),
    (
        "T4",
        Peak("T4", 65.0, 8.1, "FP32", "NVIDIA T4 datasheet: mixed-precision FP16/FP32 65 TFLOPS, FP32 8.1 TFLOPS"),
    ),
)  # fmt: skip

PRECISIONS = (
    ("float32", "float32", False),
    ("mixed_float16", "mixed_float16", False),
    ("mixed_float16 + XLA", "mixed_float16", True),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke mode: tiny sizes, GPU rows skipped (CI)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS-gpu.md", help="the Markdown file to write")
    p.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: 64, smoke 2)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per precision (default: 30, smoke 1)")
    p.add_argument("--install-note", default="", help="how the environment was installed (gpu_check.sh says)")
    return p.parse_args(argv)


def peak_for(device_name: str) -> Peak | None:
    """The datasheet peaks of the GPU whose name TensorFlow reports, or None for a GPU not in PEAKS."""
    for key, peak in PEAKS:
        if key.lower() in device_name.lower():
            return peak
    return None


# ------------------------------------------------------------------ measures
def forward_flops_per_image(model, image_size: int) -> int:
    """FLOPs of one forward pass on one image, counted by TensorFlow's profiler on the frozen inference graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, image_size, image_size, 3], tf.float32)
    )
    frozen = convert_variables_to_constants_v2(concrete)
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    profile = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops)


def training_images_per_second(
    params, policy: str, xla: bool, batch_size: int, steps: int, warmup_steps: int = 2
) -> float:
    """Images/s of model.fit on synthetic batches that stay on the device, under `policy`, with or without XLA."""
    import keras
    import tensorflow as tf
    from bench_train import training_rate

    from petseg.components.ml.model import build_model
    from petseg.components.train import loss_function

    size = params.preprocess.image_size
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.backend.clear_session()
        model = build_model(dataclasses.replace(params.model, encoder_weights="none"), size)
        model.compile(
            keras.optimizers.Adam(params.train.learning_rate),
            loss=loss_function(params.train.loss),
            jit_compile=xla,
        )
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32))
        masks = tf.constant(rng.integers(0, 3, (batch_size, size, size)).astype(np.int32))
        dataset = tf.data.Dataset.from_tensors((images, masks)).repeat()
        return training_rate(model, dataset, steps, batch_size, warmup_steps=warmup_steps)
    finally:
        keras.config.set_dtype_policy(previous)


def pipeline_images_per_second(image_size: int, batch_size: int, examples: int, batches: int) -> float:
    """The project's training input pipeline, warm cache, over TFRecords of synthetic photos (bench_train's)."""
    from bench_train import first_epoch_seconds, pipeline_rate, project_dataset, synthetic_photos, write_project_records

    with tempfile.TemporaryDirectory(prefix="gpu-check-records-") as tmp:
        records = write_project_records(synthetic_photos(examples), Path(tmp) / "records", image_size)
        dataset = project_dataset(records, image_size, batch_size, examples)
        _, iterator = first_epoch_seconds(dataset, max(1, examples // batch_size))
        return pipeline_rate(iterator, batches, batch_size)


def serving_p50s(params, seconds: float = 3.0, min_requests: int = 30) -> dict[str, float]:
    """p50 ms at 500x375, batch 1, paired: in-process serving_png, gRPC serving_bytes, REST serving_png."""
    import yaml
    from bench_serving import (
        ENCODED_MODES,
        encoded_forms,
        export_params_model,
        interleaved,
        photo_jpeg,
        start_server,
    )

    from petseg.components.core.params import params_to_dict
    from petseg.components.ml.cluster import free_ports

    with tempfile.TemporaryDirectory(prefix="gpu-check-serving-") as tmp:
        base = Path(tmp)
        model_dir = export_params_model(params, base / "export")
        (base / "models" / "petseg").mkdir(parents=True)
        shutil.copytree(model_dir, base / "models" / "petseg" / "1")
        params_file = base / "params.yaml"
        params_file.write_text(yaml.safe_dump(params_to_dict(params)))
        port, rest_port = free_ports(2)
        server = start_server(base / "models", params_file, port, rest_port, lambda line: print(line, flush=True))
        try:
            forms = encoded_forms(model_dir, photo_jpeg(500, 375), port, rest_port, params.serve.max_message_mb)
            cells = interleaved([forms[m] for m in ENCODED_MODES], seconds, min_requests, 1)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return {mode: cell.percentile(50) for mode, cell in zip(ENCODED_MODES, cells, strict=True)}


# ------------------------------------------------------------------ the run
def gpu_names() -> list[str]:
    import tensorflow as tf

    return [
        tf.config.experimental.get_device_details(d).get("device_name", d.name)
        for d in tf.config.list_physical_devices("GPU")
    ]


def run(args: argparse.Namespace, say: Callable[[str], None] = print) -> dict:
    """Every figure this machine can give, as a dict (rows the machine cannot give are named in `skipped`)."""
    import keras
    import tensorflow as tf

    from petseg.components.core.params import load_params, with_overrides
    from petseg.components.ml.model import build_model

    started = time.perf_counter()
    gpus = gpu_names()
    smoke = args.smoke or not gpus
    params = load_params(args.params)
    if smoke:
        params = with_overrides(params, {"preprocess.image_size": 32})
    batch = args.batch_size or (2 if smoke else 64)
    steps = args.steps or (1 if smoke else 30)
    size = params.preprocess.image_size
    figures: dict = dict(
        smoke=smoke,
        gpus=gpus,
        tensorflow=tf.__version__,
        keras=keras.__version__,
        python=platform.python_version(),
        model=params.model.architecture,
        image_size=size,
        batch_size=batch,
        steps=steps,
        install_note=args.install_note,
        training={},
        skipped=[],
    )
    if smoke:
        reason = "smoke mode" if args.smoke else "no GPU seen by TensorFlow"
        figures["skipped"].append(SKIPPED_LINE.format(reason=reason))
    peak = None if smoke else peak_for(gpus[0])
    figures["peak"] = dataclasses.asdict(peak) if peak else None
    if not smoke and peak is None:
        figures["skipped"].append(f"fraction of peak: {gpus[0]} is not in bench/gpu_check.py PEAKS; add its datasheet")

    say(f"gpu_check: {'smoke mode (CPU)' if smoke else ', '.join(gpus)}; {params.model.architecture} at {size} px")
    forward = forward_flops_per_image(
        build_model(dataclasses.replace(params.model, encoder_weights="none"), size), size
    )
    figures["forward_gflops"] = forward / 1e9
    figures["training_gflops"] = 3 * forward / 1e9
    say(f"gpu_check: {forward / 1e9:.2f} GFLOP per image forward, ~{3 * forward / 1e9:.2f} training")

    for label, policy, xla in PRECISIONS[:1] if smoke else PRECISIONS:
        rate = training_images_per_second(params, policy, xla, batch, steps, warmup_steps=1 if smoke else 2)
        achieved = rate * 3 * forward / 1e12
        row: dict = dict(images_per_second=rate, tflops=achieved)
        if peak is not None:
            peak_tflops = peak.fp16 if policy == "mixed_float16" else peak.fp32
            row.update(peak_tflops=peak_tflops, fraction_of_peak=achieved / peak_tflops)
        figures["training"][label] = row
        say(f"gpu_check: training {label}: {rate:.1f} images/s ({achieved:.2f} TFLOP/s)")

    pipeline = pipeline_images_per_second(size, batch, examples=8 if smoke else 512, batches=4 if smoke else 100)
    fastest = max(r["images_per_second"] for r in figures["training"].values())
    figures["pipeline_images_per_second"] = pipeline
    figures["pipeline_headroom"] = pipeline / fastest
    say(f"gpu_check: input pipeline {pipeline:.1f} images/s = {pipeline / fastest:.1f}x the fastest training step")

    if not smoke:
        figures["serving_p50_ms"] = serving_p50s(params)
        say(f"gpu_check: serving p50 at 500x375 (ms): {figures['serving_p50_ms']}")
    figures["seconds"] = time.perf_counter() - started
    return figures


def results_markdown(f: dict, when: datetime.datetime, command: str) -> str:
    """bench/RESULTS-gpu.md: the machine, then one table of figures, then what was skipped."""
    gpu = ", ".join(f["gpus"]) or "none seen by TensorFlow"
    lines = [
        "# GPU check",
        "",
        f"- Date: {when.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Command: `{command}`" + (" (CPU smoke mode: tiny sizes, not GPU figures)" if f["smoke"] else ""),
        f"- GPU: {gpu}",
        f"- Software: Python {f['python']}, TensorFlow {f['tensorflow']}, Keras {f['keras']}",
        *([f"- Install: {f['install_note']}"] if f["install_note"] else []),
        f"- Model: {f['model']} (untrained weights) at {f['image_size']} px, training batch {f['batch_size']}, "
        f"{f['steps']} timed steps after {1 if f['smoke'] else 2} warm-up step(s); measured in {f['seconds']:.0f} s",
    ]
    peak = f.get("peak")
    if peak:
        lines.append(
            f"- Peak used: {peak['name']} dense tensor core, FP16/BF16 {peak['fp16']:g} TFLOP/s, "
            f"{peak['fp32_kind']} {peak['fp32']:g} TFLOP/s (source: {peak['source']}; dense = half the sparse figure)"
        )
    rows = []
    for label, row in f["training"].items():
        share = f"{row['fraction_of_peak']:.1%} of {row['peak_tflops']:g} TFLOP/s" if "fraction_of_peak" in row else ""
        rows.append([f"Training, {label} (images/s)", f"{row['images_per_second']:.1f}", f"{row['tflops']:.2f}", share])
    rows.append(["FLOPs per image, forward (GFLOP)", f"{f['forward_gflops']:.3f}", "", "TF profiler, frozen graph"])
    rows.append(["FLOPs per image, training (GFLOP)", f"{f['training_gflops']:.3f}", "", "3x forward"])
    rows.append(
        [
            "Input pipeline, warm cache (images/s)",
            f"{f['pipeline_images_per_second']:.1f}",
            "",
            f"headroom {f['pipeline_headroom']:.1f}x the fastest training row",
        ]
    )
    for mode, p50 in (f.get("serving_p50_ms") or {}).items():
        rows.append([f"Serving p50 at 500x375, {mode} (ms)", f"{p50:.1f}", "", "paired, batch 1"])
    table = ["| Figure | Value | Achieved TFLOP/s | Fraction of peak / note |", "|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    skipped = [f"- {line}" for line in f["skipped"]]
    return "\n".join([*lines, "", *table, *(["", *skipped] if skipped else [])]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python", "bench/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    figures = run(args)
    text = results_markdown(figures, datetime.datetime.now(datetime.UTC), command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staged = args.out.with_name(f".{args.out.name}.tmp")
    staged.write_text(text)
    os.replace(staged, args.out)
    print(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

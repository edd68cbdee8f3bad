"""bench/gpu_check.sh in CI's CPU smoke mode, and bench/gpu_check.py's peaks and Markdown fed given figures."""

from __future__ import annotations

import datetime
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]
    sys.path.remove(str(BENCH))


@pytest.mark.slow  # about 30 s of CPU: TensorFlow, a model build, the profiler, one training step
def test_smoke_mode_measures_on_the_cpu_and_says_the_gpu_rows_are_skipped(tmp_path):
    out = tmp_path / "RESULTS-gpu.md"
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--smoke", "--out", str(out)],
        env={**os.environ, "SMOKE_PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "(CPU smoke mode: tiny sizes, not GPU figures)" in text
    assert "- GPU rows skipped: smoke mode; run `bash bench/gpu_check.sh` on a machine with an NVIDIA GPU" in text
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1] for line in text.splitlines() if line.startswith("| ")
    }
    assert float(rows["FLOPs per image, forward (GFLOP)"]) > 0
    assert float(rows["FLOPs per image, training (GFLOP)"]) == pytest.approx(
        3 * float(rows["FLOPs per image, forward (GFLOP)"]), rel=0.01
    )
    assert float(rows["Training, float32 (images/s)"]) > 0
    assert float(rows["Input pipeline, warm cache (images/s)"]) > 0
    assert not any("mixed_float16" in row or "Serving" in row for row in rows)  # GPU rows: skipped, not faked
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check: unknown argument --fast; see the top of bench/gpu_check.sh"


@pytest.mark.parametrize(
    "device, name, fp16, fp32",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5, 494.5),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5, 378.0),
        ("NVIDIA H200", "H200 SXM", 989.5, 494.5),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0, 156.0),
        ("Tesla T4", "T4", 65.0, 8.1),
    ],
)
def test_peaks_are_the_dense_datasheet_figures(gpu_check, device, name, fp16, fp32):
    peak = gpu_check.peak_for(device)
    assert (peak.name, peak.fp16, peak.fp32) == (name, fp16, fp32)
    assert "datasheet" in peak.source
    assert gpu_check.peak_for("Some Future GPU") is None


def test_a_gpu_run_is_written_with_fractions_of_the_named_peak(gpu_check):
    peak = gpu_check.peak_for("NVIDIA H100 80GB HBM3")
    figures = dict(
        smoke=False,
        gpus=["NVIDIA H100 80GB HBM3"],
        tensorflow="2.21.0",
        keras="3.15.1",
        python="3.12.3",
        model="mobilenetv2_unet",
        image_size=128,
        batch_size=64,
        steps=30,
        install_note="from the package registry in 150s",
        peak=gpu_check.dataclasses.asdict(peak),
        forward_gflops=1.2,
        training_gflops=3.6,
        training={
            "float32": dict(images_per_second=2000.0, tflops=7.2, peak_tflops=494.5, fraction_of_peak=7.2 / 494.5),
            "mixed_float16": dict(
                images_per_second=4000.0, tflops=14.4, peak_tflops=989.5, fraction_of_peak=14.4 / 989.5
            ),
        },
        pipeline_images_per_second=8000.0,
        pipeline_headroom=2.0,
        serving_p50_ms={"png_in_process": 4.0, "grpc_bytes": 5.0, "rest_png": 6.0},
        skipped=[],
        seconds=300.0,
    )
    text = gpu_check.results_markdown(figures, datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC), "python x")
    assert "| Training, float32 (images/s) | 2000.0 | 7.20 | 1.5% of 494.5 TFLOP/s |" in text
    assert "| Training, mixed_float16 (images/s) | 4000.0 | 14.40 | 1.5% of 989.5 TFLOP/s |" in text
    assert (
        "- Peak used: H100 SXM dense tensor core, FP16/BF16 989.5 TFLOP/s, TF32 494.5 TFLOP/s (source: NVIDIA H100"
        in text
    )
    assert "| Serving p50 at 500x375, rest_png (ms) | 6.0 |" in text
    assert "headroom 2.0x the fastest training row" in text
    assert "skipped" not in text

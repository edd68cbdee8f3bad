"""bench/run_all.py's Markdown writer, fed given figures (no benchmark runs here)."""

from __future__ import annotations

import datetime
import importlib.util
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


MACHINE = dict(
    cpu="Test CPU 9000",
    cores=2,
    usable_cores=2,
    memory_gib=23.5,
    python="3.11.7",
    system="Linux-test",
    tensorflow="2.21.0",
    keras="3.15.1",
    gpus=[],
)

PREPROCESS = dict(
    images=1500,
    image_size=128,
    examples_per_shard=256,
    cores=2,
    workers=2,
    load_before=0.5,
    load_after=0.7,
    serial_s=3.0,
    serial_cpu_s=3.0,
    parallel_s=2.0,
    parallel_cpu_s=3.6,
    speedup=1.5,
    speedup_goal=1.0,
    speedup_met=True,
    identical=True,
)

TRAIN = dict(
    examples=128,
    image_size=128,
    batch_size=32,
    steps=6,
    pipeline_batches=20,
    rounds=2,
    gpus=0,
    cpus=2,
    load_after=1.0,
    first_epoch_s={"project": 0.1, "seed": 0.2},
    pipeline_rounds={"project": [3000.0, 3100.0], "seed": [2000.0, 2100.0]},
    training_rounds={"project": [20.0, 21.0], "seed": [22.0, 24.0]},
    pipeline={"project": 3100.0, "seed": 2100.0},
    training={"project": 21.0, "seed": 24.0},
    pipeline_ratio=3100 / 2100,
    training_ratio=21 / 24,
    headroom=3100 / 21,
    headroom_goal=10.0,
    headroom_met=True,
    training_ratio_goal=1.0,
    training_ratio_met=False,
)


def _cell(level: int, floor_p50: float, server_p50: float, server_p99: float) -> dict:
    return dict(
        width=128,
        height=128,
        batch=1,
        concurrency=level,
        in_process_requests=50,
        in_process_p50=floor_p50,
        in_process_p95=floor_p50 * 1.2,
        in_process_p99=floor_p50 * 1.5,
        in_process_throughput=1000 / floor_p50,
        server_requests=50,
        server_p50=server_p50,
        server_p95=server_p99 * 0.9,
        server_p99=server_p99,
        server_throughput=1000 / server_p50,
        server_baseline_p50=floor_p50,
        server_ratio=server_p50 / floor_p50,
        rest_requests=50,
        rest_p50=server_p50 * 2,
        rest_p95=server_p99 * 1.8,
        rest_p99=server_p99 * 2,
        rest_throughput=500 / server_p50,
        rest_baseline_p50=floor_p50,
        rest_ratio=server_p50 * 2 / floor_p50,
    )


def _encoded_cell(width: int, height: int, level: int, floor_p50: float, grpc_p50: float, rest_p50: float) -> dict:
    cell = dict(width=width, height=height, batch=1, concurrency=level, jpeg_bytes=width * height // 4)
    for mode, p50 in (("png_in_process", floor_p50), ("grpc_bytes", grpc_p50), ("rest_png", rest_p50)):
        cell.update(
            {
                f"{mode}_requests": 30,
                f"{mode}_p50": p50,
                f"{mode}_p95": p50 * 1.2,
                f"{mode}_p99": p50 * 1.5,
                f"{mode}_throughput": 1000 / p50,
            }
        )
    return cell | dict(rest_png_vs_grpc_bytes=rest_p50 / grpc_p50, rest_png_vs_in_process=rest_p50 / floor_p50)


SERVING = dict(
    model="mobilenetv2_unet (untrained)",
    server_workers=4,
    cpus=2,
    seconds=1.5,
    min_requests=15,
    load_after=2.0,
    cells=[_cell(1, 30.0, 33.0, 40.0), _cell(16, 150.0, 200.0, 700.0)],
    overhead_goal=0.15,
    tail_goal=3.0,
    overhead=[dict(width=128, height=128, batch=1, concurrency=1, added=0.1, added_ms=3.0, met=True)],
    tail=[dict(width=128, height=128, batch=1, concurrency=16, ratio=3.5, met=False)],
    encoded_cells=[_encoded_cell(128, 128, 1, 10.0, 12.0, 14.0), _encoded_cell(500, 375, 1, 30.0, 32.0, 45.0)],
    png_goal=1.3,
    png=[
        dict(width=128, height=128, concurrency=1, ratio=14 / 12, met=True),
        dict(width=500, height=375, concurrency=1, ratio=45 / 32, met=False),
    ],
    wire=[
        dict(
            width=500,
            height=375,
            batch=1,
            jpeg=40000,
            grpc_pixels=dict(request=562_540, response=187_530),
            rest_pixels=dict(request=2_400_000, response=6_700_000),
            grpc_bytes=dict(request=40_040, response=187_530),
            rest_png=dict(request=53_400, response=1_650),
        )
    ],
)


def _markdown(run_all, runs) -> str:
    return run_all.results_markdown(
        MACHINE,
        "python bench/run_all.py --quick",
        True,
        runs,
        (0.5, 0.4, 0.3),
        (2.0, 1.0, 0.5),
        datetime.datetime(2025, 1, 2, 3, 4, tzinfo=datetime.UTC),
        "abc1234",
    )


def _runs(run_all, serving_figures=SERVING, serving_rc=0):
    py = sys.executable
    return [
        run_all.Run(
            "preprocess",
            [py, str(RUN_ALL.parent / "bench_preprocess.py"), "--examples", "1500", "--json", "/tmp/x/preprocess.json"],
            60.0,
            0,
            PREPROCESS,
        ),
        run_all.Run("train", [py, str(RUN_ALL.parent / "bench_train.py")], 70.0, 0, TRAIN),
        run_all.Run("serving", [py, str(RUN_ALL.parent / "bench_serving.py")], 40.0, serving_rc, serving_figures),
    ]


def test_markdown_table_has_header_rule_and_escaped_rows(run_all):
    table = run_all.markdown_table(["A", "B"], [["1", "x|y"], ["2", ""]])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1 | x\\|y |", "| 2 |  |"]


def test_results_name_machine_command_and_goals(run_all):
    text = _markdown(run_all, _runs(run_all))
    assert text.startswith("# Benchmark results\n")
    assert "Quick mode on a 2-core CPU-only machine with no GPU. Goals met: 5 of 8." in text
    for line in (
        "- Date: 2025-01-02 03:04 UTC",
        "- Command: `python bench/run_all.py --quick`",
        "- CPU: Test CPU 9000, 2 cores",
        "- Memory: 23.5 GiB",
        "- GPU: none seen by TensorFlow",
        "TensorFlow 2.21.0",
        "0.50/0.40/0.30 before, 2.00/1.00/0.50 after",
        "- Code: commit abc1234",
    ):
        assert line in text
    # The per-benchmark command is the one a user would type: relative path, no --json.
    assert "`python bench/bench_preprocess.py --examples 1500` (60 s)" in text
    assert "--json" not in text


def test_results_tables_carry_figures_ratios_and_goal_outcomes(run_all):
    lines = _markdown(run_all, _runs(run_all)).splitlines()

    def row(start: str) -> list[str]:
        [found] = [line for line in lines if line.startswith(start)]
        return [cell.strip() for cell in found.strip("|").split("|")]

    assert row("| Throughput (images/s)") == [
        "Throughput (images/s)",
        "500.0",
        "750.0",
        "1.50x",
        "> 1x with all cores (ideal 2x)",
        "yes",
    ]
    assert row("| Training (images/s)")[1:] == ["21.00", "24.00", "0.88x", ">= 1x seed", "**no**"]
    assert row("| Pipeline / training step")[1] == "147.6x" and row("| Pipeline / training step")[-1] == "yes"
    assert row("| 128x128 | 1 | 1 |")[-2:] == ["added p50 < 15%: +10.0% (+3.0 ms)", "yes"]
    assert row("| 128x128 | 1 | 1 |")[3:5] == ["30.0 / 45.0", "33.0 / 40.0"]
    assert row("| 128x128 | 1 | 1 |")[5] == "66.0 / 80.0"  # REST p50 / p99
    assert row("| 128x128 | 1 | 1 |")[8:10] == ["1.10x", "2.20x"]  # gRPC and REST over in-process
    assert row("| 128x128 | 1 | 16 |")[-2:] == ["p99/p50 < 3: 3.50", "**no**"]
    # the encoded forms: REST PNG against gRPC bytes (the goal) and against in-process PNG
    assert row("| 128x128 | 1 | 4.1 |")[3:6] == ["10.0 / 15.0", "12.0 / 18.0", "14.0 / 21.0"]
    assert row("| 128x128 | 1 | 4.1 |")[8:] == ["1.17x", "1.40x", "<= 1.3x gRPC bytes", "yes"]
    assert row("| 500x375 | 1 | 46.9 |")[-3:] == ["1.50x", "<= 1.3x gRPC bytes", "**no**"]
    # bytes on the wire per request, every API and form
    assert row("| REST pixels")[1:] == ["500x375", "1", "2,400,000", "6,700,000", "9,100,000"]
    assert row("| REST PNG")[3:] == ["53,400", "1,650", "55,050"]
    assert row("| gRPC bytes")[3:] == ["40,040", "187,530", "227,570"]
    assert sum(line.startswith("|---") for line in lines) == 5


def test_a_failed_benchmark_is_reported_not_hidden(run_all):
    text = _markdown(run_all, _runs(run_all, serving_figures=None, serving_rc=2))
    assert "**Failed** (exit 2) before writing figures" in text
    assert "Goals met: 3 of 4; 1 benchmark(s) failed." in text

"""The run folders are named once (components/contracts/layout.py): dvc.yaml passes exactly the CLI's defaults."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from petseg.cli.main import build_parser, modules_for
from petseg.components.contracts import layout

STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def _parsed(cmd: str):
    argv = shlex.split(cmd)[1:]  # drop "petseg"
    return build_parser(modules_for(argv)).parse_args(argv), build_parser(modules_for(argv[:1])).parse_args(argv[:1])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_passes_the_cli_defaults_for_every_folder_it_names(stage):
    given, defaults = _parsed(STAGES[stage]["cmd"])
    named = {key: value for key, value in vars(given).items() if isinstance(value, Path)}
    assert named, f"stage {stage} names no folder"
    folders = {layout.RAW_DIR, layout.VALIDATION_DIR, layout.RECORDS_DIR, layout.EVALUATION_DIR}
    for key, value in named.items():
        default = getattr(defaults, key)
        if default is None:  # an optional input (push --validation): it must still be a run folder
            assert value in folders, f"stage {stage}: --{key} {value} is not a run folder of layout.py"
        else:
            assert value == default, f"stage {stage}: --{key} {value} is not the default {default}"


def test_stage_outputs_are_the_layout_folders():
    outs = {next(iter(o)) if isinstance(o, dict) else o for stage in STAGES.values() for o in stage.get("outs", [])}
    assert {
        layout.RAW_DIR.as_posix(),
        layout.VALIDATION_DIR.as_posix(),
        layout.RECORDS_DIR.as_posix(),
        layout.savedmodel_dir(layout.MODELS_DIR).as_posix(),
        layout.checkpoint_dir(layout.MODELS_DIR).as_posix(),
        layout.LIVE_DIR.as_posix(),
        layout.PUSH_RECORD.as_posix(),
        layout.MODEL_CARD_REPORT.as_posix(),
    } <= outs
    metrics = {m for stage in STAGES.values() for m in stage.get("metrics", [])}
    assert (layout.EVALUATION_DIR / layout.METRICS_FILE).as_posix() in metrics
    assert layout.train_metrics_file(layout.MODELS_DIR).as_posix() in metrics


def test_a_stage_that_moves_a_folder_is_caught():
    given, defaults = _parsed("petseg preprocess --raw data/raw2 --out data/records")
    assert given.raw != defaults.raw

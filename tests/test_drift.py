"""Drift against a reference validation (`petseg validate --reference`): the no_drift_* expectations.

The reference is the report folder an accepted validation of the tiny
synthetic dataset wrote; the data under test is that same dataset, as it is,
made half as bright, or with its breed balance shifted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from great_expectations.execution_engine.util import is_valid_partition_object
from helpers import tiny_params_dict, write_blessing
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from petseg.cli import main
from petseg.components.checks.drift import drift_partition
from petseg.components.checks.scan import _colour_stats, example_table
from petseg.components.contracts.lineage import Lineage
from petseg.components.contracts.rawdata import dataset_fingerprint, read_index, write_index
from petseg.components.contracts.validation import require_validated
from petseg.components.core.errors import DataValidationError, ParamsError, PetsegError
from petseg.components.core.expectations import DRIFT_CHECKS, DRIFT_NAMES
from petseg.components.core.fsutil import read_json
from petseg.components.core.params import DriftParams, PushParams, params_from_dict
from petseg.components.push import push
from petseg.components.store.model_store import ModelStore
from petseg.components.validate import validate_dataset

# Few examples per breed here: the count bounds must not be what fails once some breeds are dropped.
BOUNDS = {"min_train_examples": 1, "min_test_examples": 1}


def _validate_params(**validate):
    return params_from_dict(tiny_params_dict({"validate": {**BOUNDS, **validate}})).validate


@pytest.fixture(scope="module")
def reference(synthetic_raw_master, tmp_path_factory) -> Path:
    """The report folder of an accepted validation of the tiny synthetic dataset."""
    out = tmp_path_factory.mktemp("reference") / "validation"
    validate_dataset(synthetic_raw_master, _validate_params(), out)
    return out


def _half_as_bright(raw: Path) -> None:
    for example in read_index(raw):
        with Image.open(raw / example.image) as image:
            pixels = np.asarray(image)
        Image.fromarray((pixels // 2).astype(np.uint8)).save(raw / example.image, format="JPEG", quality=95)


def _fewer_breeds(raw: Path) -> None:
    """Keep only the examples of half the breeds (in each split): the same images, another balance."""
    examples = read_index(raw)
    breeds = sorted({e.class_id for e in examples})
    kept = set(breeds[::2])
    write_index(raw, [e for e in examples if e.class_id in kept])


def test_table_has_the_drift_statistics_of_each_example(synthetic_raw):
    table = example_table(synthetic_raw, read_index(synthetic_raw), workers=1)
    for column in ("brightness", "red_share", "green_share", "blue_share"):
        assert table[column].notna().all(), column
    assert np.allclose(table[["red_share", "green_share", "blue_share"]].sum(axis=1), 1.0)
    first = read_index(synthetic_raw)[0]
    with Image.open(synthetic_raw / first.image) as image:
        luma = np.asarray(image.convert("L"), dtype=np.float64).mean()
    assert table.loc[0, "brightness"] == pytest.approx(luma, abs=0.6)  # PIL rounds L per pixel


def test_colour_stats_of_known_images():
    grey = _colour_stats(Image.new("RGB", (4, 3), (100, 100, 100)))
    assert grey["brightness"] == pytest.approx(100.0)
    assert grey["red_share"] == grey["green_share"] == grey["blue_share"] == pytest.approx(1 / 3)
    red = _colour_stats(Image.new("RGB", (2, 2), (200, 0, 0)))
    assert red["brightness"] == pytest.approx(0.299 * 200) and red["red_share"] == 1.0
    black = _colour_stats(Image.new("RGB", (2, 2), (0, 0, 0)))
    assert black["brightness"] == 0.0 and black["red_share"] == pytest.approx(1 / 3)


def test_same_data_against_itself_passes_and_records_the_reference(synthetic_raw_master, reference, tmp_path):
    out = tmp_path / "validation"
    result = validate_dataset(synthetic_raw_master, _validate_params(), out, reference=reference)

    assert result.success and result.failed_critical == [] and result.failed_warnings == []
    gx = read_json(out / "gx_result.json")["results"]
    drift = {
        (r["expectation_config"]["meta"]["name"], r["expectation_config"]["kwargs"]["column"]): r
        for r in gx
        if r["expectation_config"]["meta"]["name"].startswith("no_drift_")
    }
    expected = {(name, column) for name, (columns, _) in DRIFT_CHECKS.items() for column in columns}
    assert set(drift) == expected  # every statistic compared, with GX's KL-divergence expectation
    assert all(r["expectation_config"]["type"] == "expect_column_kl_divergence_to_be_less_than" for r in drift.values())
    assert drift[("no_drift_class_balance", "class_id")]["result"]["observed_value"] == 0.0
    summary = read_json(out / "summary.json")
    assert summary["drift_reference"] == {
        "dir": str(reference),
        "fingerprint": dataset_fingerprint(synthetic_raw_master),
    }
    require_validated(synthetic_raw_master, out)


def test_half_as_bright_fails_naming_brightness(synthetic_raw, reference, tmp_path):
    _half_as_bright(synthetic_raw)
    out = tmp_path / "validation"

    with pytest.raises(DataValidationError) as caught:
        validate_dataset(synthetic_raw, _validate_params(), out, reference=reference)

    message = str(caught.value)
    assert "\n" not in message
    assert "no_drift_brightness (brightness: KL divergence " in message and "> 0.25 against the reference)" in message
    summary = read_json(out / "summary.json")
    assert summary["success"] is False and "no_drift_brightness" in summary["failed_critical"]
    # The colours' shares, the breeds and the masks are what they were.
    assert not {"no_drift_class_balance", "no_drift_colour", "no_drift_pet_area"} & set(summary["failed_critical"])
    with pytest.raises(PetsegError, match="failed validation"):
        require_validated(synthetic_raw, out)


def test_shifted_class_balance_fails_naming_it(synthetic_raw, reference, tmp_path):
    _fewer_breeds(synthetic_raw)
    out = tmp_path / "validation"

    with pytest.raises(DataValidationError, match=r"no_drift_class_balance \(class_id: KL divergence [0-9.]+ > 0\.1 "):
        validate_dataset(synthetic_raw, _validate_params(), out, reference=reference)

    assert "no_drift_class_balance" in read_json(out / "summary.json")["failed_critical"]
    assert "no_drift_brightness" not in read_json(out / "summary.json")["failed_critical"]


def test_drift_only_warns_when_not_critical(synthetic_raw, reference, tmp_path):
    _half_as_bright(synthetic_raw)
    critical = [n for n in _validate_params().critical if n not in DRIFT_NAMES]

    result = validate_dataset(synthetic_raw, _validate_params(critical=critical), tmp_path / "v", reference=reference)

    assert result.success and "no_drift_brightness" in result.failed_warnings


def test_drift_threshold_comes_from_params(synthetic_raw, reference, tmp_path):
    _half_as_bright(synthetic_raw)
    lenient = _validate_params(drift={"max_kl_brightness": 1000.0, "max_kl_colour": 1000.0})
    result = validate_dataset(synthetic_raw, lenient, tmp_path / "v", reference=reference)
    assert "no_drift_brightness" not in result.failed_critical + result.failed_warnings


def _cli_validate(raw: Path, folder: Path, out: Path, validate: dict | None = None, *flags: str) -> list[str]:
    """`petseg validate` with tiny params (push.model_base_path `folder`/serving) and `flags`."""
    params_file = folder / "params.yaml"
    sections = {"validate": {**BOUNDS, **(validate or {})}, "push": {"model_base_path": str(folder / "serving")}}
    params_file.write_text(yaml.safe_dump(tiny_params_dict(sections)))
    return ["validate", "--raw", str(raw), "--out", str(out), "--params", str(params_file), *flags]


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("petseg")]


def test_reference_from_params_when_no_flag(synthetic_raw, reference, tmp_path, capsys):
    _half_as_bright(synthetic_raw)
    args = _cli_validate(synthetic_raw, tmp_path, tmp_path / "v", {"drift": {"reference": str(reference)}})
    assert main(args) == 1
    [line] = _error_lines(capsys)
    assert "no_drift_brightness (" in line


def test_nothing_served_means_no_drift_check_and_says_so(synthetic_raw, tmp_path, capsys):
    _half_as_bright(synthetic_raw)  # would drift from anything; there is nothing to compare with
    assert main(_cli_validate(synthetic_raw, tmp_path, tmp_path / "v")) == 0
    assert f"validate: no version served at {tmp_path / 'serving' / 'petseg'} yet: no drift check" in (
        capsys.readouterr().out
    )
    assert read_json(tmp_path / "v" / "summary.json")["drift_reference"] is None


def test_the_served_versions_training_data_is_the_reference(
    synthetic_raw, reference, rule_savedmodels, tmp_path, capsys
):
    """push keeps the validation report with the version; the next validate compares with it by default."""
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    fingerprint = read_json(reference / "summary.json")["fingerprint"]
    model = rule_savedmodels["perfect"]
    lineage = Lineage(validation_fingerprint=fingerprint)
    assert push(model, write_blessing(model, store, tmp_path), store, lineage, drift_reference=reference).version == 1
    kept = Path(ModelStore.from_params(store).version_path(1)) / "drift_reference"
    for name in ("summary.json", "examples.csv"):
        assert (kept / name).read_bytes() == (reference / name).read_bytes()
    assert sorted(p.name for p in kept.iterdir()) == ["examples.csv", "summary.json"]  # not the Data Docs
    assert read_json(Path(ModelStore.from_params(store).version_path(1)) / "lineage.json")["drift_reference"] == {
        "dir": "drift_reference",
        "source": str(reference),
        "fingerprint": fingerprint,
    }
    capsys.readouterr()

    assert main(_cli_validate(synthetic_raw, tmp_path, tmp_path / "same")) == 0
    assert f"drift reference: the data served version 1 was trained on ({kept})" in capsys.readouterr().out
    assert read_json(tmp_path / "same" / "summary.json")["drift_reference"] == {
        "dir": str(kept),
        "fingerprint": fingerprint,
    }

    _half_as_bright(synthetic_raw)
    assert main(_cli_validate(synthetic_raw, tmp_path, tmp_path / "dark")) == 1
    [line] = _error_lines(capsys)
    assert line.startswith("petseg validate: error: ") and "no_drift_brightness (" in line

    # --reference "" turns the check off for one run; the summary says no reference was used.
    assert main(_cli_validate(synthetic_raw, tmp_path, tmp_path / "unchecked", None, "--reference", "")) == 0
    assert read_json(tmp_path / "unchecked" / "summary.json")["drift_reference"] is None


def test_a_served_version_without_a_reference_means_no_drift_check(synthetic_raw, rule_savedmodels, tmp_path, capsys):
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    model = rule_savedmodels["perfect"]
    push(model, write_blessing(model, store, tmp_path), store, Lineage())
    capsys.readouterr()
    assert main(_cli_validate(synthetic_raw, tmp_path, tmp_path / "v")) == 0
    assert "served version 1 at" in capsys.readouterr().out
    assert read_json(tmp_path / "v" / "summary.json")["drift_reference"] is None


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda ref, tmp: _copy(ref, tmp, summary={"success": False}), "that validation failed"),
        (lambda ref, tmp: _copy(ref, tmp, summary={"fingerprint": "0" * 64}), "that report validated other data"),
        (lambda ref, tmp: tmp / "nowhere", "is not a validation report (summary.json missing)"),
        (lambda ref, tmp: _copy(ref, tmp, remove="examples.csv"), "examples.csv missing from"),
    ],
)
def test_push_refuses_a_report_that_cannot_be_the_reference(reference, rule_savedmodels, tmp_path, make, error):
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    model = rule_savedmodels["perfect"]
    lineage = Lineage(validation_fingerprint=read_json(reference / "summary.json")["fingerprint"])
    with pytest.raises(PetsegError, match=re.escape(error)) as caught:
        push(model, write_blessing(model, store, tmp_path), store, lineage, drift_reference=make(reference, tmp_path))
    assert "\n" not in str(caught.value)
    assert (
        ModelStore.from_params(store).version_numbers() == [] and ModelStore.from_params(store).served_version() is None
    )


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda ref, tmp: tmp / "nowhere", "is not a validation report (summary.json missing)"),
        (lambda ref, tmp: _copy(ref, tmp, summary={"success": False}), "that validation failed"),
        (lambda ref, tmp: _copy(ref, tmp, drop="brightness"), "has no brightness column (written by an older petseg)"),
        (lambda ref, tmp: _copy(ref, tmp, table=b"\xff\xfe not csv"), "cannot read examples.csv"),
        (lambda ref, tmp: _copy(ref, tmp, summary_text="{not json"), "is unreadable"),
    ],
)
def test_a_bad_reference_is_one_line_and_writes_nothing(synthetic_raw, reference, tmp_path, make, error):
    bad = make(reference, tmp_path)
    out = tmp_path / "validation"
    with pytest.raises(PetsegError, match=re.escape(error)) as caught:
        validate_dataset(synthetic_raw, _validate_params(), out, reference=bad)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def _copy(reference: Path, tmp: Path, *, summary=None, drop=None, table=None, summary_text=None, remove=None) -> Path:
    copy = tmp / "bad-reference"
    shutil.copytree(reference, copy)
    if remove is not None:
        (copy / remove).unlink()
    if summary is not None:
        (copy / "summary.json").write_text(json.dumps({**read_json(reference / "summary.json"), **summary}))
    if summary_text is not None:
        (copy / "summary.json").write_text(summary_text)
    if drop is not None:
        pd.read_csv(copy / "examples.csv").drop(columns=[drop]).to_csv(copy / "examples.csv", index=False)
    if table is not None:
        (copy / "examples.csv").write_bytes(table)
    return copy


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("max_kl_brightness", 0, "'validate.drift.max_kl_brightness' must be greater than 0.0"),
        ("bins", 1, "'validate.drift.bins' must be at least 2"),
        ("smoothing", -1, "'validate.drift.smoothing' must be greater than 0.0"),
        ("new_class_weight", 2, "'validate.drift.new_class_weight' must be at most 1.0"),
        ("max_kl_colours", 1, "validate.drift.max_kl_colours"),
    ],
)
def test_drift_params_are_checked(key, value, error):
    with pytest.raises(ParamsError, match=error.replace(".", r"\.")):
        _validate_params(drift={key: value})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50), st.integers(2, 30), st.floats(0.01, 5))
def test_partition_is_a_valid_gx_continuous_partition(values, bins, smoothing):
    partition = drift_partition(pd.Series(values), "brightness", DriftParams(bins=bins, smoothing=smoothing))
    edges = np.array(partition["bins"])
    assert edges[0] == -np.inf and edges[-1] == np.inf and np.all(np.diff(edges) > 0)
    assert len(partition["weights"]) == len(edges) - 1 == bins + 2
    assert min(partition["weights"]) > 0 and sum(partition["weights"]) == pytest.approx(1.0)
    assert is_valid_partition_object(partition)  # GX's own check of what the expectation accepts
    categorical = drift_partition(pd.Series(values).round().clip(1, 37), "class_id", DriftParams())
    assert is_valid_partition_object(categorical) and sum(categorical["weights"]) == pytest.approx(1.0)


def test_cli_reference_flag_passes_then_fails_with_one_line(synthetic_raw, reference, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params_file = Path("params.yaml")
    params_file.write_text(yaml.safe_dump(tiny_params_dict({"validate": BOUNDS})))
    args = ["validate", "--raw", str(synthetic_raw), "--params", str(params_file), "--reference", str(reference)]

    assert main(args) == 0
    assert "passed (32 examples" in capsys.readouterr().out

    _half_as_bright(synthetic_raw)
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("petseg")]
    assert len(err) == 1 and err[0].startswith("petseg validate: error: ") and "no_drift_brightness (" in err[0]

    assert main([*args[:-1], str(tmp_path / "nowhere")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("petseg")]
    assert err == [
        f"petseg validate: error: {tmp_path / 'nowhere'} is not a validation report (summary.json "
        "missing); pass the --out folder of an accepted `petseg validate`"
    ]


def test_real_photos_against_themselves_pass(sample_dir, tmp_path):
    data = params_from_dict(tiny_params_dict({"data": {"source": "archives", "archives": {"path": str(sample_dir)}}}))
    raw = tmp_path / "raw"
    from petseg.components.download import download

    download(data.data, raw)
    params = _validate_params(min_train_examples=10, min_test_examples=5)
    validate_dataset(raw, params, tmp_path / "reference")
    result = validate_dataset(raw, params, tmp_path / "again", reference=tmp_path / "reference")
    assert result.success and result.failed_critical == [] and result.failed_warnings == []

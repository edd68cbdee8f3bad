import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_params_dict
from PIL import Image

from petseg.cli import main
from petseg.components.checks import scan as scan_module
from petseg.components.checks.scan import example_table
from petseg.components.contracts.rawdata import dataset_fingerprint, read_index, sha256_file, write_index
from petseg.components.contracts.validation import require_validated
from petseg.components.core.errors import DataValidationError, ParamsError, PetsegError
from petseg.components.core.expectations import DRIFT_NAMES, EXPECTATION_NAMES
from petseg.components.core.fsutil import read_json
from petseg.components.core.params import params_from_dict
from petseg.components.download import download
from petseg.components.validate import validate_dataset


def _validate_params(**validate):
    return params_from_dict(tiny_params_dict({"validate": validate})).validate


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im)


# ----------------------------------------------------------------------- table
def test_table_describes_each_example(synthetic_raw):
    examples = read_index(synthetic_raw)
    table = example_table(synthetic_raw, examples, workers=1)

    assert list(table["id"]) == [ex.id for ex in examples]
    assert table["split"].value_counts().to_dict() == {"trainval": 24, "test": 8}
    assert table["image_decodes"].all() and table["mask_decodes"].all()
    assert set(table["image_format"]) == {"JPEG"} and set(table["image_channels"]) == {3}
    assert set(table["mask_values"]) == {"1 2 3"}
    assert (table["id_split_count"] == 1).all() and (table["image_sha256_split_count"] == 1).all()
    fractions = table[["pet_fraction", "background_fraction", "border_fraction"]].sum(axis=1)
    assert np.allclose(fractions, 1.0)

    row, ex = table.iloc[3], examples[3]
    image, trimap = _pixels(synthetic_raw / ex.image), _pixels(synthetic_raw / ex.trimap)
    assert (row["image_height"], row["image_width"]) == image.shape[:2] == trimap.shape
    assert row["image_size"] == row["mask_size"] == f"{image.shape[0]}x{image.shape[1]}"
    assert row["pet_fraction"] == pytest.approx(np.mean(trimap == 1))
    assert row["border_fraction"] == pytest.approx(np.mean(trimap == 3))
    assert row["image_sha256"] == sha256_file(synthetic_raw / ex.image)
    assert (row["class_id"], row["breed"], row["species"]) == (ex.class_id, ex.breed, ex.species)


def test_table_is_the_same_across_worker_processes(synthetic_raw, monkeypatch):
    examples = read_index(synthetic_raw)
    serial = example_table(synthetic_raw, examples, workers=1)
    monkeypatch.setattr(scan_module, "_MIN_EXAMPLES_PER_WORKER", 8)
    parallel = example_table(synthetic_raw, examples, workers=2)
    assert parallel.equals(serial)


def test_missing_files_are_undecodable_rows(synthetic_raw):
    examples = read_index(synthetic_raw)
    (synthetic_raw / examples[0].image).unlink()
    (synthetic_raw / examples[1].trimap).write_bytes(b"not a png")
    table = example_table(synthetic_raw, examples[:2], workers=1)
    assert not table.loc[0, "image_decodes"] and "cannot read" in table.loc[0, "image_error"]
    assert table.loc[0, "mask_decodes"]
    assert table.loc[1, "image_decodes"] and not table.loc[1, "mask_decodes"]


# ----------------------------------------------------------------- real sample
def test_real_sample_passes_and_writes_reports(sample_dir, tmp_path):
    data = params_from_dict(tiny_params_dict({"data": {"source": "archives", "archives": {"path": str(sample_dir)}}}))
    raw, out = tmp_path / "raw", tmp_path / "reports"
    download(data.data, raw)

    result = validate_dataset(raw, _validate_params(min_train_examples=10, min_test_examples=5), out)

    assert result.success and result.failed_critical == []
    assert result.counts == {"trainval": 18, "test": 8} and result.examples == 26
    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "examples.csv", "gx_result.json", "summary.json"]
    summary = read_json(out / "summary.json")
    assert summary["success"] is True and summary["fingerprint"] == dataset_fingerprint(raw)
    require_validated(raw, out)

    gx_result = read_json(out / "gx_result.json")
    assert gx_result["success"] is True
    # Every expectation but the no_drift_* ones, which run only against a reference.
    assert {r["expectation_config"]["meta"]["name"] for r in gx_result["results"]} == set(EXPECTATION_NAMES) - set(
        DRIFT_NAMES
    )
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and result.data_docs == pages[0]
    page = pages[0].read_text()
    assert "mask_values_in_trimap_set (critical)" in page and "pet_fraction_in_range (warning)" in page
    index = out / "data_docs" / "index.html"
    assert pages[0].relative_to(out / "data_docs").as_posix() in index.read_text()
    assert not list(tmp_path.glob(".reports*")), "no staging folder left behind"


# -------------------------------------------------------------------- bad data
def _mask_value_7(raw, examples):
    ex = examples[0]
    trimap = _pixels(raw / ex.trimap).copy()
    trimap[5, 5] = 7
    Image.fromarray(trimap).save(raw / ex.trimap)
    return ex.id


def _truncated_jpeg(raw, examples):
    ex = examples[1]
    data = (raw / ex.image).read_bytes()
    (raw / ex.image).write_bytes(data[: len(data) // 2])
    return ex.id


def _grayscale_image(raw, examples):
    ex = examples[2]
    Image.open(raw / ex.image).convert("L").save(raw / ex.image, format="JPEG")
    return ex.id


def _image_and_mask_sizes_differ(raw, examples):
    ex = examples[3]
    image = Image.open(raw / ex.image)
    image.resize((image.width + 7, image.height)).save(raw / ex.image, format="JPEG")
    return ex.id


def _duplicate_id(raw, examples):
    write_index(raw, [*examples, examples[4]])
    return examples[4].id


def _image_in_train_and_test(raw, examples):
    ex = examples[5]
    assert ex.split == "trainval"
    shutil.copy(raw / ex.image, raw / "images" / "copied.jpg")
    shutil.copy(raw / ex.trimap, raw / "trimaps" / "copied.png")
    copy = dataclasses.replace(ex, id="copied", split="test", image="images/copied.jpg", trimap="trimaps/copied.png")
    write_index(raw, [*examples, copy])
    return ex.id


@pytest.mark.parametrize(
    "break_data, expectation",
    [
        (_mask_value_7, "mask_values_in_trimap_set"),
        (_truncated_jpeg, "image_decodes"),
        (_grayscale_image, "image_is_rgb"),
        (_image_and_mask_sizes_differ, "mask_size_matches_image"),
        (_duplicate_id, "ids_unique"),
        (_image_in_train_and_test, "no_train_test_leakage"),
    ],
)
def test_bad_data_stops_validation_naming_the_expectation(synthetic_raw, tmp_path, break_data, expectation):
    offender = break_data(synthetic_raw, read_index(synthetic_raw))
    out = tmp_path / "reports"

    with pytest.raises(DataValidationError) as caught:
        validate_dataset(synthetic_raw, _validate_params(), out)

    message = str(caught.value)
    assert message.startswith(f"1 critical expectation failed: {expectation} (")
    assert offender in message and f"details in {out / 'data_docs' / 'validations'}" in message
    assert "\n" not in message
    summary = read_json(out / "summary.json")
    assert summary["success"] is False and summary["failed_critical"] == [expectation]
    assert (out / "examples.csv").is_file() and (out / "data_docs" / "index.html").is_file()
    with pytest.raises(PetsegError, match=f"failed validation \\({expectation}\\)"):
        require_validated(synthetic_raw, out)


def test_non_critical_failures_only_warn(synthetic_raw, tmp_path, caplog):
    _mask_value_7(synthetic_raw, read_index(synthetic_raw))
    critical = [n for n in _validate_params().critical if n != "mask_values_in_trimap_set"]
    params = _validate_params(critical=critical, max_border_fraction=0.001)

    result = validate_dataset(synthetic_raw, params, tmp_path / "reports")

    assert result.success and result.failed_critical == []
    assert result.failed_warnings == ["mask_values_in_trimap_set", "border_fraction_in_range"]
    assert len(result.offending_ids["border_fraction_in_range"]) == 32
    summary = read_json(tmp_path / "reports" / "summary.json")
    assert summary["success"] is True and summary["failed_warnings"] == result.failed_warnings
    assert "border_fraction_in_range (32 examples" in caplog.text
    require_validated(synthetic_raw, tmp_path / "reports")


def test_unknown_critical_name_is_a_params_error(synthetic_raw, tmp_path):
    with pytest.raises(ParamsError, match=r"'validate\.critical' names unknown expectation 'ids_uniq'"):
        validate_dataset(synthetic_raw, _validate_params(critical=["ids_uniq"]), tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_inconsistent_bounds_are_a_params_error():
    with pytest.raises(ParamsError, match=r"validate\.min_train_examples must not exceed"):
        _validate_params(min_train_examples=10, max_train_examples=5)


# ------------------------------------------------------------------------- CLI
def test_cli_passes_then_fails_with_one_line(synthetic_raw, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as dvc.yaml passes them
    params_file, out = Path("params.yaml"), Path("reports/validation")
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    args = ["validate", "--raw", synthetic_raw.name, "--params", str(params_file)]

    assert main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("validate: ") and "passed (32 examples: test 8, trainval 24)" in printed[-1]

    params_file.write_text(yaml.safe_dump(tiny_params_dict({"validate": {"min_train_examples": 1000}})))
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("petseg")]
    assert len(err) == 1 and err[0].startswith(
        f"petseg validate: error: 1 critical expectation failed: "
        f"train_count_in_bounds (observed 24, expected 1000-100000); details in {out / 'data_docs' / 'validations'}/"
    )
    assert err[0].endswith(".html")
    assert read_json(out / "summary.json")["failed_critical"] == ["train_count_in_bounds"]

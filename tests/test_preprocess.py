import dataclasses
import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.cli import main
from petseg.components.contracts import records
from petseg.components.contracts.manifest import MANIFEST_FILE, load_manifest
from petseg.components.contracts.rawdata import RawExample, dataset_fingerprint, read_index
from petseg.components.contracts.validation import ValidationSummary, write_summary
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import PreprocessParams
from petseg.components.preprocess import (
    load_example,
    preprocess,
    resize_image,
    resize_mask,
    split_dataset,
    stratified_split,
    trimap_to_classes,
    val_count,
)

PARAMS = PreprocessParams(image_size=48, val_fraction=0.2, examples_per_shard=5, workers=1, seed=3)


@pytest.fixture
def validated_raw(synthetic_raw, tmp_path):
    """(raw, validation report) where the report is a passing summary for raw as it is now."""
    report = tmp_path / "validation"
    write_summary(report, ValidationSummary(success=True, fingerprint=dataset_fingerprint(synthetic_raw)))
    return synthetic_raw, report


def _read_split(records_dir: Path, split: str, size: int) -> list[dict]:
    import tensorflow as tf

    ds = tf.data.TFRecordDataset([str(p) for p in records.shard_paths(records_dir, split)])
    return [{k: v.numpy() for k, v in records.parse_example(s, size).items()} for s in ds]


def _fake_examples(counts: dict[int, int]) -> list[RawExample]:
    return [
        RawExample(id=f"b{cid}_{i}", split="trainval", image="", trimap="", class_id=cid, breed="", species="")
        for cid, n in counts.items()
        for i in range(n)
    ]


# ------------------------------------------------------------------- refusals
def test_refuses_unvalidated_dataset_and_writes_nothing(synthetic_raw, tmp_path):
    out = tmp_path / "records"
    with pytest.raises(PetsegError, match=r"has not been validated.*petseg validate"):
        preprocess(synthetic_raw, tmp_path / "no-report", PARAMS, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_failed_validation_and_leaves_old_output(synthetic_raw, tmp_path, capsys):
    report = tmp_path / "validation"
    write_summary(
        report,
        ValidationSummary(
            success=False,
            fingerprint=dataset_fingerprint(synthetic_raw),
            failed_critical=("mask_values_in_trimap_set",),
        ),
    )
    out = tmp_path / "records"
    out.mkdir()
    (out / "previous.txt").write_text("keep")
    code = main(
        [
            "preprocess",
            "--raw",
            str(synthetic_raw),
            "--validation",
            str(report),
            "--out",
            str(out),
            "--params",
            str(Path(__file__).parents[1] / "params.yaml"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "failed validation (mask_values_in_trimap_set)" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_refuses_data_changed_after_validation(validated_raw, tmp_path):
    raw, report = validated_raw
    first = read_index(raw)[0]
    (raw / first.trimap).write_bytes((raw / read_index(raw)[1].trimap).read_bytes())
    with pytest.raises(PetsegError, match="changed since it was validated"):
        preprocess(raw, report, PARAMS, tmp_path / "records")
    assert not (tmp_path / "records").exists()


@pytest.mark.parametrize("text", ["{truncated", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_an_unreadable_validation_summary_is_one_line(validated_raw, tmp_path, text):
    raw, report = validated_raw
    (report / "summary.json").write_text(text)
    with pytest.raises(PetsegError, match=r"summary\.json (is unreadable|is not a validation summary)") as caught:
        preprocess(raw, report, PARAMS, tmp_path / "records")
    assert "\n" not in str(caught.value) and not (tmp_path / "records").exists()


def test_missing_raw_folder_is_named(tmp_path):
    with pytest.raises(PetsegError, match="not a raw dataset"):
        preprocess(tmp_path / "nowhere", tmp_path / "validation", PARAMS, tmp_path / "records")


# --------------------------------------------------------------- one example
def test_trimap_values_map_to_class_ids():
    trimap = np.array([[1, 2, 3], [3, 2, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(trimap_to_classes(trimap), [[0, 1, 2], [2, 1, 0]])
    assert trimap_to_classes(trimap).dtype == np.uint8
    assert records.CLASS_NAMES == ("pet", "background", "border")
    for bad in (0, 4, 7):
        with pytest.raises(ValueError, match=f"\\[{bad}\\] outside 1, 2, 3"):
            trimap_to_classes(np.array([[1, bad]], dtype=np.uint8))


def test_resize_gives_square_outputs_and_nearest_keeps_labels():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (70, 130, 3), dtype=np.uint8))
    assert resize_image(image, 48).shape == (48, 48, 3) and resize_image(image, 48).dtype == np.uint8
    mask = np.zeros((70, 130), np.uint8)
    mask[20:50, 30:100] = 2  # only labels 0 and 2: bilinear would invent 1s on the edge, nearest must not
    small = resize_mask(mask, 48)
    assert small.shape == (48, 48) and set(np.unique(small)) == {0, 2}
    big = resize_mask(mask, 256)
    assert set(np.unique(big)) == {0, 2}
    assert abs((big == 2).mean() - (mask == 2).mean()) < 0.01


def test_pil_bilinear_matches_tf_antialiased_resize_on_real_photo(sample_dir):
    import tensorflow as tf

    path = sorted((sample_dir / "images").glob("*.jpg"))[0]
    with Image.open(path) as im:
        photo = im.convert("RGB")
    for size in (64, 128, 256):
        ours = resize_image(photo, size).astype(np.float32)
        served = tf.image.resize(np.asarray(photo)[None], [size, size], "bilinear", antialias=True)[0].numpy()
        diff = np.abs(ours - np.clip(np.round(served), 0, 255))
        assert diff.mean() < 0.5 and diff.max() <= 2, (size, diff.mean(), diff.max())


def test_load_example_reads_resizes_and_maps(validated_raw):
    raw, _ = validated_raw
    ex = read_index(raw)[0]
    image, mask = load_example(raw, ex, 40)
    assert image.shape == (40, 40, 3) and mask.shape == (40, 40)
    assert set(np.unique(mask)) <= {0, 1, 2} and (mask == 0).any() and (mask == 1).any()


# ---------------------------------------------------------------------- split
def test_stratified_split_rule():
    examples = _fake_examples({1: 40, 2: 10, 3: 2, 4: 1, 5: 3})
    train, val = stratified_split(examples, 0.1, seed=1)
    per_class_val = Counter(ex.class_id for ex in val)
    assert per_class_val == {1: 4, 2: 1, 3: 1, 5: 1}, "n * f rounded half up, at least 1 from a breed of 2 or more"
    assert {ex.id for ex in train} | {ex.id for ex in val} == {ex.id for ex in examples}
    assert not {ex.id for ex in train} & {ex.id for ex in val}
    assert [val_count(n, 0.5) for n in (1, 2, 3, 4, 5)] == [0, 1, 2, 2, 3], "halves round up, one stays in train"
    assert [val_count(n, 0.0) for n in (1, 2, 50)] == [0, 0, 0]
    assert stratified_split(examples, 0.0, seed=1)[1] == []


def test_split_is_seeded_and_ignores_input_order():
    examples = _fake_examples({c: 12 for c in range(1, 8)})
    first = stratified_split(examples, 0.25, seed=5)
    assert stratified_split(list(reversed(examples)), 0.25, seed=5) == first
    other = stratified_split(examples, 0.25, seed=6)
    assert {ex.id for ex in other[1]} != {ex.id for ex in first[1]}
    assert len(other[1]) == len(first[1]) == 7 * 3
    train_classes = [ex.class_id for ex in first[0]]
    assert train_classes != sorted(train_classes), "train is shuffled so every shard mixes breeds"


def test_split_dataset_keeps_test_apart(synthetic_raw):
    splits = split_dataset(read_index(synthetic_raw), 0.2, seed=3)
    ids = {split: {ex.id for ex in exs} for split, exs in splits.items()}
    assert len(ids["test"]) == 8 and len(ids["train"]) + len(ids["val"]) == 24
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert all(i.startswith("synthetic_test_") for i in ids["test"])
    by_class = defaultdict(int)
    for ex in splits["train"] + splits["val"]:
        by_class[ex.class_id] += 1
    val_classes = {ex.class_id for ex in splits["val"]}
    assert val_classes == {c for c, n in by_class.items() if n >= 2}


# ------------------------------------------------------------ the whole step
def test_shards_read_back_exactly_and_manifest_describes_them(validated_raw, tmp_path):
    raw, report = validated_raw
    out = tmp_path / "records"
    out.mkdir()
    (out / "train-00000-of-00099.tfrecord").write_text("stale")  # a previous run's leftovers go away

    result = preprocess(raw, report, PARAMS, out)

    manifest = load_manifest(out)
    by_id = {ex.id: ex for ex in read_index(raw)}
    assert result.counts == manifest.counts and sum(result.counts.values()) == 32
    assert manifest.image_size == 48 and manifest.class_names == records.CLASS_NAMES
    assert manifest.raw_fingerprint == dataset_fingerprint(raw)
    assert manifest.params["val_fraction"] == 0.2 and manifest.params["seed"] == 3
    files = sorted(p.name for p in out.iterdir())
    listed = sorted(s["file"] for split in records.SPLITS for s in manifest.shards[split])
    assert files == sorted([*listed, MANIFEST_FILE])

    for split in records.SPLITS:
        shards = manifest.shards[split]
        assert [s["file"] for s in shards] == [p.name for p in records.shard_paths(out, split)]
        assert result.shards[split] == len(shards) and all(s["examples"] <= 5 for s in shards)
        for shard in shards:
            assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
        examples = _read_split(out, split, 48)
        assert [e["id"].decode() for e in examples] == manifest.ids[split]
        assert len(examples) == manifest.counts[split] == sum(s["examples"] for s in shards)
        pixels = np.zeros(3)
        for got in examples:
            ex = by_id[got["id"].decode()]
            image, mask = load_example(raw, ex, 48)
            np.testing.assert_array_equal(got["image"], image)
            np.testing.assert_array_equal(got["mask"], mask)
            assert got["class_id"] == ex.class_id and got["species"].decode() == ex.species
            pixels += np.bincount(mask.ravel(), minlength=3)
        fractions = manifest.class_pixel_fractions[split]
        np.testing.assert_allclose([fractions[c] for c in records.CLASS_NAMES], pixels / pixels.sum(), atol=1e-5)
    assert {i.split("_")[1] for i in manifest.ids["test"]} == {"test"}


def test_empty_val_split_writes_no_val_shards(validated_raw, tmp_path):
    raw, report = validated_raw
    params = PreprocessParams(image_size=32, val_fraction=0.0, examples_per_shard=100, workers=1)
    result = preprocess(raw, report, params, tmp_path / "records")
    assert result.counts == {"train": 24, "val": 0, "test": 8}
    assert result.shards == {"train": 1, "val": 0, "test": 1}
    assert load_manifest(tmp_path / "records").class_pixel_fractions["val"] == {c: 0.0 for c in records.CLASS_NAMES}


def test_one_and_two_workers_write_identical_shards(validated_raw, tmp_path):
    raw, report = validated_raw
    one = preprocess(raw, report, PARAMS, tmp_path / "one")
    two = preprocess(raw, report, dataclasses.replace(PARAMS, workers=2), tmp_path / "two")
    assert (one.workers, two.workers) == (1, 2)
    names = sorted(p.name for p in (tmp_path / "one").glob("*.tfrecord"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.tfrecord")) and len(names) >= 4
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    manifest = (tmp_path / "one" / MANIFEST_FILE).read_bytes()
    assert manifest == (tmp_path / "two" / MANIFEST_FILE).read_bytes()
    assert "workers" not in load_manifest(tmp_path / "one").params


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_example_that_slipped_past_validation_stops_cleanly(synthetic_raw, tmp_path, workers):
    bad = read_index(synthetic_raw)[5]
    with Image.open(synthetic_raw / bad.trimap) as im:
        trimap = np.asarray(im).copy()
    trimap[0, 0] = 7
    Image.fromarray(trimap).save(synthetic_raw / bad.trimap)
    report = tmp_path / "validation"  # a (wrongly) passing summary: the step must still not write garbage
    write_summary(report, ValidationSummary(success=True, fingerprint=dataset_fingerprint(synthetic_raw)))
    params = dataclasses.replace(PARAMS, workers=workers)
    with pytest.raises(PetsegError, match=f"example {bad.id}: trimap has values \\[7\\]"):
        preprocess(synthetic_raw, report, params, tmp_path / "records")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "validation"]


def test_falls_back_to_one_worker_when_workers_cannot_start(validated_raw, tmp_path, monkeypatch):
    import sys

    raw, report = validated_raw
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    result = preprocess(raw, report, dataclasses.replace(PARAMS, workers=2), tmp_path / "records")
    assert result.workers == 1 and sum(result.counts.values()) == 32


def test_cli_prints_counts(validated_raw, tmp_path, capsys):
    raw, report = validated_raw
    params_file = tmp_path / "params.yaml"
    params_file.write_text("preprocess:\n  image_size: 32\n  val_fraction: 0.25\n  workers: 1\n")
    code = main(
        [
            "preprocess",
            "--raw",
            str(raw),
            "--validation",
            str(report),
            "--out",
            str(tmp_path / "records"),
            "--params",
            str(params_file),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    counts = load_manifest(tmp_path / "records").counts
    assert f"train {counts['train']} in 1 shards" in out and "test 8 in 1 shards" in out and "32 px" in out


def test_load_manifest_names_a_missing_or_bad_manifest(tmp_path):
    with pytest.raises(PetsegError, match=r"manifest\.json: not found.*petseg preprocess"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(PetsegError, match="unreadable"):
        load_manifest(tmp_path)


def test_shared_records_fixture_is_a_readable_records_folder(synthetic_records):
    manifest = load_manifest(synthetic_records)
    assert manifest.image_size == 64 and sum(manifest.counts.values()) == 32
    assert len(_read_split(synthetic_records, "test", 64)) == manifest.counts["test"] == 8

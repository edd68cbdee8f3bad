"""The tf.data pipelines: image and mask augmented together, repeatable order, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from petseg.components.contracts import records
from petseg.components.contracts.manifest import MANIFEST_FILE
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import AugmentParams, TrainParams
from petseg.components.ml.inputs import evaluation_dataset, flip_together, training_dataset

SIZE = 16
COUNT = 24


def _asymmetric_mask(rng: np.random.Generator) -> np.ndarray:
    """A random class mask that differs from its own mirror image."""
    while True:
        mask = rng.integers(0, 3, size=(SIZE, SIZE), dtype=np.uint8)
        if not np.array_equal(mask, mask[:, ::-1]):
            return mask


@pytest.fixture(scope="module")
def traced_records(tmp_path_factory):
    """Shards whose images carry their mask (green = 60 * class) and a left-to-right ramp (red).

    Returns the records folder and the original masks.
    """
    out = tmp_path_factory.mktemp("traced") / "records"
    out.mkdir()
    rng = np.random.default_rng(0)
    masks = [_asymmetric_mask(rng) for _ in range(COUNT)]
    ramp = np.tile(np.linspace(20, 200, SIZE).astype(np.uint8), (SIZE, 1))
    per_shard = 8
    shards = COUNT // per_shard
    for split in ("train", "val"):
        for shard in range(shards):
            with tf.io.TFRecordWriter(str(out / records.shard_name(split, shard, shards))) as writer:
                for i in range(shard * per_shard, (shard + 1) * per_shard):
                    image = np.stack([ramp, masks[i] * 60, np.full_like(ramp, i)], axis=-1).astype(np.uint8)
                    writer.write(records.serialize_example(f"ex{i}", image, masks[i]))
    (out / MANIFEST_FILE).write_text(json.dumps({"image_size": SIZE, "counts": {"train": COUNT, "val": COUNT}}))
    return out, masks


def _params(**augment) -> TrainParams:
    return TrainParams(batch_size=5, shuffle_buffer=COUNT, seed=7, augment=AugmentParams(**augment))


def _examples(ds):
    images, masks = [], []
    for image_batch, mask_batch in ds:
        images.extend(image_batch.numpy())
        masks.extend(mask_batch.numpy())
    return np.array(images), np.array(masks)


def test_training_batches_have_the_model_dtypes_and_shapes(traced_records):
    records_dir, _ = traced_records
    images, masks = next(iter(training_dataset(records_dir, SIZE, _params(), count=COUNT)))
    assert images.dtype == tf.float32 and images.shape == (5, SIZE, SIZE, 3)
    assert masks.dtype == tf.int32 and masks.shape == (5, SIZE, SIZE)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0


def test_image_and_mask_flip_together_and_both_outcomes_occur(traced_records):
    records_dir, originals = traced_records
    ds = training_dataset(records_dir, SIZE, _params(flip=True))
    flipped = 0
    for _ in range(2):  # two epochs: fresh random decisions each epoch
        images, masks = _examples(ds)
        assert len(masks) == COUNT
        for image, mask in zip(images, masks, strict=True):
            np.testing.assert_array_equal(image[..., 1], mask * 60)  # the mask the image carries moved with it
            original = originals[int(image[0, 0, 2])]
            image_flipped = image[0, 0, 0] > image[0, -1, 0]
            assert np.array_equal(mask, original[:, ::-1] if image_flipped else original)
            flipped += bool(image_flipped)
    assert 0 < flipped < 2 * COUNT


def test_brightness_and_contrast_change_the_image_only(traced_records):
    records_dir, originals = traced_records
    images, masks = _examples(training_dataset(records_dir, SIZE, _params(flip=True, brightness=0.3, contrast=0.5)))
    unchanged_ramp = np.linspace(20, 200, SIZE).astype(np.uint8).astype(np.float32)
    changed = 0
    for image, mask in zip(images, masks, strict=True):
        assert set(np.unique(mask)) <= {0, 1, 2}
        ramp = image[0, :, 0]
        image_flipped = ramp[0] > ramp[-1]
        # brightness/contrast are monotonic per image, so the ramp still tells the flip
        matches = [np.array_equal(mask, m[:, ::-1] if image_flipped else m) for m in originals]
        assert any(matches)
        changed += not np.allclose(np.sort(ramp), unchanged_ramp)
    assert changed > COUNT // 2


def test_same_seed_same_stream_and_epochs_differ(traced_records):
    records_dir, _ = traced_records
    params = _params(flip=True, brightness=0.1)
    first = _examples(training_dataset(records_dir, SIZE, params))
    again = _examples(training_dataset(records_dir, SIZE, params))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    ds = training_dataset(records_dir, SIZE, params)
    epoch1, epoch2 = _examples(ds), _examples(ds)
    assert not np.array_equal(epoch1[1], epoch2[1])


def test_no_augmentation_leaves_examples_untouched(traced_records):
    records_dir, originals = traced_records
    _, masks = _examples(training_dataset(records_dir, SIZE, _params(flip=False)))
    assert sorted(m.tobytes() for m in masks) == sorted(m.astype(np.int32).tobytes() for m in originals)


def test_evaluation_dataset_keeps_file_order(traced_records):
    records_dir, originals = traced_records
    images, masks = _examples(evaluation_dataset(records_dir, "val", SIZE, batch_size=7, count=COUNT))
    assert images.dtype == np.float32 and masks.dtype == np.int32
    np.testing.assert_array_equal(masks, np.array(originals, np.int32))


def test_flip_together_is_one_decision():
    image = tf.constant(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    mask = tf.constant(np.array([[0, 1, 2], [2, 1, 0]], np.uint8))
    outcomes = set()
    for seed in range(20):
        out_image, out_mask = flip_together(image, mask, tf.constant([seed, 1]))
        assert out_mask.dtype == tf.uint8
        image_flipped = not np.array_equal(out_image.numpy(), image.numpy())
        mask_flipped = not np.array_equal(out_mask.numpy(), mask.numpy())
        assert image_flipped == mask_flipped
        outcomes.add(image_flipped)
    assert outcomes == {True, False}


def test_missing_shards_is_a_user_error(tmp_path):
    with pytest.raises(PetsegError, match=r"no train shards.*petseg preprocess"):
        training_dataset(tmp_path, SIZE, _params())

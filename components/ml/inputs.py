"""tf.data input pipelines that feed training and evaluation from the TFRecord shards.

Training: shard files read in parallel (interleave) -> parallel parse ->
cache (decoded uint8, before augmentation) -> shuffle -> augment -> batch ->
prefetch. Images leave as float32 0-255 (the model normalises them itself),
masks as int32 class ids.

Augmentation is the same for image and mask by construction: the horizontal
flip is one stateless random op on the image and mask stacked into one
tensor, so a single decision moves both. Brightness and contrast touch the
image only. Random decisions come from stateless ops whose seeds are a
seeded stream zipped to the examples, so a run is repeatable from
`train.seed` and differs from epoch to epoch.
"""

from __future__ import annotations

from pathlib import Path

from petseg.components.contracts import records
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.params import AugmentParams, TrainParams


def split_files(records_dir: Path, split: str) -> list[str]:
    """The shard files of `split` as strings, or a PetsegError saying how to make them."""
    files = records.shard_paths(records_dir, split)
    if not files:
        raise PetsegError(
            f"{records_dir}: no {split} shards ({records.shard_name(split, 0, 1)} ...); "
            "run `petseg preprocess` first" + (" with preprocess.val_fraction > 0" if split == "val" else "")
        )
    return [str(f) for f in files]


def read_split(records_dir: Path, split: str, image_size: int, shuffle_files_seed: int | None = None):
    """(uint8 image [S, S, 3], uint8 mask [S, S]) pairs of one split, parsed in parallel.

    Without a seed: the examples in file order (shards one after another).
    With a seed (training): the shard order is shuffled once and the shards
    are read in parallel, interleaved; still a deterministic order.
    """
    import tensorflow as tf

    files = split_files(records_dir, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files_seed is not None:
        ds = ds.shuffle(len(files), seed=shuffle_files_seed, reshuffle_each_iteration=False)
    cycle = 1 if shuffle_files_seed is None else min(len(files), 8)
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )

    def parse(serialized):
        example = records.parse_example(serialized, image_size)
        return example["image"], example["mask"]

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def training_dataset(records_dir: Path, image_size: int, params: TrainParams, count: int | None = None):
    """Batches of (float32 images [B, S, S, 3] 0-255, int32 masks [B, S, S]) for one epoch, augmented.

    `count` (the number of train examples, from the manifest) lets Keras show
    the epoch's length from the first epoch on.
    """
    import tensorflow as tf

    ds = read_split(records_dir, "train", image_size, shuffle_files_seed=params.seed)
    if count is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if params.cache:
        ds = ds.cache()
    ds = ds.shuffle(params.shuffle_buffer, seed=params.seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=params.seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    augment = augmenter(params.augment)
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(params.batch_size).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(
    records_dir: Path, split: str, image_size: int, batch_size: int, cache: bool = True, count: int | None = None
):
    """Batches of (float32 images, int32 masks) of `split` in file order (the manifest's ids order), not augmented."""
    import tensorflow as tf

    ds = read_split(records_dir, split, image_size)
    if count is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if cache:
        ds = ds.cache()
    return ds.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def to_model_inputs(image, mask):
    """uint8 image and mask -> float32 image 0-255 and int32 mask, the model's input and target."""
    import tensorflow as tf

    return tf.cast(image, tf.float32), tf.cast(mask, tf.int32)


def augmenter(params: AugmentParams):
    """A tf.data map function (image, mask, seed [2]) -> (float32 image, int32 mask), augmented."""
    import tensorflow as tf

    def augment(pair, seed):
        image, mask = pair
        flip_seed, brightness_seed, contrast_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        )
        if params.flip:
            image, mask = flip_together(image, mask, flip_seed)
        image, mask = to_model_inputs(image, mask)
        if params.brightness > 0:
            image = tf.image.stateless_random_brightness(image, params.brightness * 255.0, brightness_seed)
        if params.contrast > 0:
            image = tf.image.stateless_random_contrast(
                image, 1.0 - params.contrast, 1.0 + params.contrast, contrast_seed
            )
        if params.brightness > 0 or params.contrast > 0:
            image = tf.clip_by_value(image, 0.0, 255.0)
        return image, mask

    return augment


def flip_together(image, mask, seed):
    """Flip image [S, S, 3] and mask [S, S] left-right together, or neither: one decision for both."""
    import tensorflow as tf

    stacked = tf.concat([image, tf.cast(mask, image.dtype)[..., None]], axis=-1)
    stacked = tf.image.stateless_random_flip_left_right(stacked, seed)
    return stacked[..., :3], tf.cast(stacked[..., 3], mask.dtype)


def numpy_batches(records_dir: Path, split: str, image_size: int, batch_size: int):
    """(uint8 images [B, S, S, 3], uint8 masks [B, S, S]) of `split` in file order, as NumPy arrays.

    For scoring a SavedModel through its serving signature, which takes uint8
    images as a client sends them. A damaged shard is a PetsegError.
    """
    import tensorflow as tf

    iterator = read_split(records_dir, split, image_size).batch(batch_size).prefetch(2).as_numpy_iterator()
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise PetsegError(
                f"{records_dir}: unreadable {split} shard ({first_line(exc)}); run `petseg preprocess` again"
            ) from None

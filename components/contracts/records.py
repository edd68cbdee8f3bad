"""The TFRecord format that preprocess writes and train/evaluate read.

One tf.train.Example per image, already resized to the model's input size:

    id        bytes    example id
    image     bytes    raw uint8 pixels, [size, size, 3], row-major
    mask      bytes    raw uint8 class ids, [size, size]: 0 pet, 1 background, 2 border
    size      int64    side length
    class_id  int64    breed id 1-37 (0 unknown)
    species   bytes    "cat", "dog" or ""

Raw pixels rather than PNG/JPEG: decoding is the bottleneck of a small-image
input pipeline, and the shards stay a few hundred MB for the whole dataset.
Shards are `<split>-<index>-of-<count>.tfrecord`; manifest.json beside them
holds counts, class fractions, per-shard sha256 and the params used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = ("pet", "background", "border")
SPLITS = ("train", "val", "test")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_paths(records_dir: str | Path, split: str) -> list[Path]:
    """The shard files of one split, in order."""
    return sorted(Path(records_dir).glob(f"{split}-*-of-*.tfrecord"))


def serialize_example(
    example_id: str, image: np.ndarray, mask: np.ndarray, class_id: int = 0, species: str = ""
) -> bytes:
    """A serialized tf.train.Example for one resized image [S, S, 3] and mask [S, S]."""
    import tensorflow as tf

    size = image.shape[0]
    if image.shape != (size, size, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [{size}, {size}, 3], got {image.dtype} {image.shape}")
    if mask.shape != (size, size) or mask.dtype != np.uint8:
        raise ValueError(f"mask must be uint8 [{size}, {size}], got {mask.dtype} {mask.shape}")

    def _bytes(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    features = {
        "id": _bytes(example_id.encode()),
        "image": _bytes(np.ascontiguousarray(image).tobytes()),
        "mask": _bytes(np.ascontiguousarray(mask).tobytes()),
        "size": _int(size),
        "class_id": _int(int(class_id)),
        "species": _bytes(species.encode()),
    }
    # deterministic=True orders the feature map by key; otherwise the bytes vary from process to process.
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def parse_example(serialized, image_size: int) -> dict:
    """Graph-mode parser for tf.data: uint8 image [S, S, 3], uint8 mask [S, S], id, class_id, species."""
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "mask": tf.io.FixedLenFeature([], tf.string),
        "size": tf.io.FixedLenFeature([], tf.int64),
        "class_id": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "species": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    ex = tf.io.parse_single_example(serialized, spec)
    image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [image_size, image_size, 3])
    mask = tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), [image_size, image_size])
    return {"id": ex["id"], "image": image, "mask": mask, "class_id": ex["class_id"], "species": ex["species"]}

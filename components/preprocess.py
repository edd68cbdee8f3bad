"""Step 3, preprocess: turn a validated raw dataset into sharded TFRecords for training.

What it does, in order:

1. Refuses a raw dataset that has not passed validation (or changed since) via
   `contracts.validation.require_validated`; nothing is written then.
2. Splits the official `trainval` examples into `train` and `val`, stratified by
   breed (`class_id`); `test` stays `test`. The rule, per breed with n examples:
   n_val = n * val_fraction rounded half up, but at least 1 when n >= 2 and val_fraction > 0,
   and at most n - 1 (a breed always keeps a training example); a breed with a
   single example goes to train. Which examples go to val is a seeded permutation
   of the breed's ids (sorted first, so the order of examples.csv does not matter).
   Order within a split: train is shuffled with the seed (so every shard mixes
   breeds), val and test are sorted by id.
3. Decodes each image (RGB) and trimap, resizes the image with PIL's bilinear filter
   (antialiased when shrinking; the serving graph's `tf.image.resize(..., "bilinear",
   antialias=True)` agrees with it to within rounding) and the trimap with nearest
   neighbour, and maps trimap 1/2/3 to classes 0/1/2 (pet, background, border).
4. Writes `<split>-<i>-of-<n>.tfrecord` shards of at most `examples_per_shard`
   examples in the `records` schema, and a manifest. Worker processes (spawned;
   `workers`, 0 = one per core) each decode and resize a whole shard; this process
   serializes and writes it (see `write_shards` for why the work is cut that way).

Shards and manifest are a pure function of (raw data, params minus workers): 1 worker
or many write byte-identical folders. The output folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from petseg.components.contracts import records
from petseg.components.contracts.manifest import MANIFEST_FILE, Manifest, write_manifest
from petseg.components.contracts.rawdata import RawExample, read_index, sha256_file
from petseg.components.contracts.validation import SUMMARY_FILE, require_validated
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import atomic_directory, check_output_dir, io_errors_named, read_json
from petseg.components.core.params import PreprocessParams, params_to_dict
from petseg.components.core.progress import progress_bar

SPLIT_RULE = (
    "per breed (class_id): n_val = n * val_fraction rounded half up, at least 1 if n >= 2 and val_fraction > 0, "
    "at most n - 1; chosen by a permutation seeded with (seed, class_id) of the breed's sorted ids; "
    "train shuffled with seed, val and test sorted by id"
)


@dataclass(frozen=True)
class PreprocessResult:
    """Where the records went and how many examples and shards each split has."""

    out_dir: Path
    image_size: int
    counts: dict[str, int]
    shards: dict[str, int]
    workers: int


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: which examples, from where, to which file (picklable for worker processes)."""

    raw_dir: str
    out_path: str
    split: str
    examples: tuple[RawExample, ...]
    image_size: int


@dataclass(frozen=True)
class DecodedShard:
    """A shard's examples after decoding, resizing and label mapping, in task order."""

    images: np.ndarray  # uint8 [n, S, S, 3]
    masks: np.ndarray  # uint8 [n, S, S], class ids


@dataclass(frozen=True)
class ShardResult:
    """A written shard: the file's name, hash, example ids in order, and class pixel counts."""

    file: str
    split: str
    sha256: str
    ids: list[str]
    class_pixels: list[int]


# ------------------------------------------------------------------ the step
def preprocess(raw_dir: Path, validation_dir: Path, params: PreprocessParams, out_dir: Path) -> PreprocessResult:
    """Write train/val/test TFRecord shards and a manifest for a validated raw dataset into `out_dir`."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    examples = read_index(raw_dir)  # first, so a missing raw folder is named as such
    require_validated(raw_dir, validation_dir)
    fingerprint = read_json(Path(validation_dir) / SUMMARY_FILE)["fingerprint"]  # == the raw data's, just checked

    splits = split_dataset(examples, params.val_fraction, params.seed)
    check_output_dir(out_dir, MANIFEST_FILE, "preprocess", owned=("*.tfrecord",))
    with io_errors_named(out_dir, "preprocess"), atomic_directory(out_dir) as staging:
        tasks = plan_shards(raw_dir, staging, splits, params.image_size, params.examples_per_shard)
        workers = max(1, min(resolve_workers(params.workers), len(tasks))) if _can_spawn() else 1
        results = write_shards(tasks, workers)
        write_manifest(staging, build_manifest(splits, results, params, fingerprint))
    return PreprocessResult(
        out_dir=out_dir,
        image_size=params.image_size,
        counts={split: len(splits[split]) for split in records.SPLITS},
        shards={split: sum(r.split == split for r in results) for split in records.SPLITS},
        workers=workers,
    )


# --------------------------------------------------------------- splitting
def split_dataset(examples: Iterable[RawExample], val_fraction: float, seed: int) -> dict[str, list[RawExample]]:
    """train/val/test lists: official test as is, trainval split by breed as the module docstring says."""
    trainval: list[RawExample] = []
    test: list[RawExample] = []
    for ex in examples:
        if ex.split == "trainval":
            trainval.append(ex)
        elif ex.split == "test":
            test.append(ex)
        else:
            raise PetsegError(
                f"example {ex.id} has split {ex.split!r}, not trainval or test; run `petseg download` again"
            )
    train, val = stratified_split(trainval, val_fraction, seed)
    return {"train": train, "val": val, "test": sorted(test, key=_by_id)}


def stratified_split(
    examples: list[RawExample], val_fraction: float, seed: int
) -> tuple[list[RawExample], list[RawExample]]:
    """(train, val): a seeded per-breed split; train shuffled, val sorted by id."""
    by_class: dict[int, list[RawExample]] = defaultdict(list)
    for ex in examples:
        by_class[ex.class_id].append(ex)
    train: list[RawExample] = []
    val: list[RawExample] = []
    for class_id in sorted(by_class):
        group = sorted(by_class[class_id], key=_by_id)
        order = np.random.default_rng([seed, class_id]).permutation(len(group))
        n_val = val_count(len(group), val_fraction)
        val.extend(group[i] for i in order[:n_val])
        train.extend(group[i] for i in order[n_val:])
    train.sort(key=_by_id)
    shuffled = np.random.default_rng(seed).permutation(len(train))
    return [train[i] for i in shuffled], sorted(val, key=_by_id)


def val_count(n: int, val_fraction: float) -> int:
    """How many of a breed's n examples go to val (see the module docstring for the rule)."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(n * val_fraction + 0.5)))


def _by_id(ex: RawExample) -> str:
    return ex.id


# ------------------------------------------------------------ one example
def load_example(raw_dir: str | Path, example: RawExample, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The resized image uint8 [S, S, 3] and class mask uint8 [S, S] (0 pet, 1 background, 2 border)."""
    raw_dir = Path(raw_dir)
    try:
        with Image.open(raw_dir / example.image) as im:
            image = im.convert("RGB")
        with Image.open(raw_dir / example.trimap) as im:
            trimap = np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise PetsegError(
            f"example {example.id}: cannot read its files ({exc}); run `petseg validate` on {raw_dir}"
        ) from None
    if trimap.ndim != 2 or trimap.shape != (image.height, image.width):
        raise PetsegError(
            f"example {example.id}: trimap {trimap.shape} does not match image "
            f"{image.height}x{image.width}; run `petseg validate` on {raw_dir}"
        )
    try:
        classes = trimap_to_classes(trimap)
    except ValueError as exc:
        raise PetsegError(f"example {example.id}: {exc}; run `petseg validate` on {raw_dir}") from None
    return resize_image(image, image_size), resize_mask(classes, image_size)


def trimap_to_classes(trimap: np.ndarray) -> np.ndarray:
    """Trimap values 1 pet / 2 background / 3 border as class ids 0 / 1 / 2 (uint8); ValueError on other values."""
    classes = trimap.astype(np.int32) - 1
    if classes.size and (classes.min() < 0 or classes.max() >= len(records.CLASS_NAMES)):
        bad = sorted(set(np.unique(trimap).tolist()) - {1, 2, 3})
        raise ValueError(f"trimap has values {bad[:5]} outside 1, 2, 3")
    return classes.astype(np.uint8)


def resize_image(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image squashed to [size, size, 3] uint8 with PIL's (antialiased) bilinear filter."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A label mask squashed to [size, size] uint8 by nearest neighbour, so no new labels appear."""
    resized = Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8)


# ------------------------------------------------------------------ shards
def resolve_workers(workers: int) -> int:
    """The number of worker processes: `workers`, or one per CPU core this process may use when 0."""
    if workers:
        return workers
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _can_spawn() -> bool:
    """False when worker processes could not re-import the main program (e.g. a script fed on stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def plan_shards(
    raw_dir: Path, out_dir: Path, splits: dict[str, list[RawExample]], image_size: int, examples_per_shard: int
) -> list[ShardTask]:
    """Cut each split, in order, into ceil(n / examples_per_shard) shards of near-equal size (none if empty)."""
    tasks = []
    for split in records.SPLITS:
        examples = splits[split]
        count = math.ceil(len(examples) / examples_per_shard)
        for index in range(count):
            chunk = examples[index * len(examples) // count : (index + 1) * len(examples) // count]
            tasks.append(
                ShardTask(
                    raw_dir=str(raw_dir),
                    out_path=str(Path(out_dir) / records.shard_name(split, index, count)),
                    split=split,
                    examples=tuple(chunk),
                    image_size=image_size,
                )
            )
    return tasks


def write_shards(tasks: list[ShardTask], workers: int) -> list[ShardResult]:
    """Write every shard; results in task order.

    Decoding and resizing (about 95% of the work) run in `workers` processes, a whole
    shard per task; this process serializes each decoded shard and writes its file
    as it arrives. Workers never import TensorFlow, so they start in a fraction of a
    second instead of the ~4 s a TensorFlow import costs per process.
    """
    results: list[ShardResult | None] = [None] * len(tasks)
    with (
        progress_bar(total=sum(len(t.examples) for t in tasks), desc="preprocess", unit="img") as bar,
        contextlib.closing(_decoded_shards(tasks, workers)) as decoded_shards,
    ):
        for index, decoded in decoded_shards:
            results[index] = write_shard(tasks[index], decoded)
            bar.update(len(tasks[index].examples))
    return results  # type: ignore[return-value]


def _decoded_shards(tasks: list[ShardTask], workers: int) -> Generator[tuple[int, DecodedShard], None, None]:
    """(task index, decoded shard) pairs, in completion order."""
    if workers <= 1:
        for index, task in enumerate(tasks):
            yield index, decode_shard(task)
        return
    # spawn, not fork: this process may have TensorFlow loaded, which is not fork-safe.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        # Largest shards first keeps the workers evenly busy; at most two shards per
        # worker in flight bounds the decoded pixels held in memory.
        queue = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].examples))
        pending: dict = {}
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                index = queue.pop(0)
                pending[pool.submit(decode_shard, tasks[index])] = index
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                yield index, future.result()  # re-raises a worker's error here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_shard(task: ShardTask) -> DecodedShard:
    """One shard's examples as resized images and class masks (runs in a worker process; no TensorFlow)."""
    size = task.image_size
    images = np.empty((len(task.examples), size, size, 3), np.uint8)
    masks = np.empty((len(task.examples), size, size), np.uint8)
    for i, ex in enumerate(task.examples):
        images[i], masks[i] = load_example(task.raw_dir, ex, size)
    return DecodedShard(images=images, masks=masks)


def write_shard(task: ShardTask, decoded: DecodedShard) -> ShardResult:
    """Serialize a decoded shard into its TFRecord file in the `records` schema, and describe the file."""
    import tensorflow as tf

    try:
        with tf.io.TFRecordWriter(task.out_path) as writer:
            for ex, image, mask in zip(task.examples, decoded.images, decoded.masks, strict=True):
                writer.write(records.serialize_example(ex.id, image, mask, ex.class_id, ex.species))
    except tf.errors.OpError as exc:  # TF reports a full disk or a file size limit as its own error type
        raise OSError(errno.EIO, exc.message.rsplit("; ", 1)[-1], task.out_path) from None
    pixels = np.bincount(decoded.masks.ravel(), minlength=len(records.CLASS_NAMES))
    return ShardResult(
        file=Path(task.out_path).name,
        split=task.split,
        sha256=sha256_file(task.out_path),
        ids=[ex.id for ex in task.examples],
        class_pixels=pixels.tolist(),
    )


# ---------------------------------------------------------------- manifest
def build_manifest(
    splits: dict[str, list[RawExample]], results: list[ShardResult], params: PreprocessParams, fingerprint: str
) -> Manifest:
    """The manifest: what train/evaluate need to read the shards, and what makes them reproducible."""
    manifest: dict = {
        "image_size": params.image_size,
        "class_names": list(records.CLASS_NAMES),
        "counts": {},
        "class_pixel_fractions": {},
        "shards": {},
        "ids": {},
        "ids_sha256": {},
        "split_rule": SPLIT_RULE,
        # `workers` changes how fast, not what: leaving it out keeps the manifest (and so
        # the whole records folder) identical whatever the number of workers.
        "params": {k: v for k, v in params_to_dict(params).items() if k != "workers"},
        "raw_fingerprint": fingerprint,
    }
    for split in records.SPLITS:
        written = [r for r in results if r.split == split]
        ids = [i for r in written for i in r.ids]
        assert ids == [ex.id for ex in splits[split]], "shards must hold the split in order"
        pixels = np.sum([r.class_pixels for r in written], axis=0) if written else np.zeros(len(records.CLASS_NAMES))
        manifest["counts"][split] = len(ids)
        manifest["class_pixel_fractions"][split] = _fractions(pixels)
        manifest["shards"][split] = [{"file": r.file, "examples": len(r.ids), "sha256": r.sha256} for r in written]
        manifest["ids"][split] = ids
        manifest["ids_sha256"][split] = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return Manifest(**{**manifest, "class_names": tuple(manifest["class_names"])})


def _fractions(pixels: np.ndarray) -> dict[str, float]:
    total = float(np.sum(pixels))
    return {
        name: (round(float(n) / total, 6) if total else 0.0)
        for name, n in zip(records.CLASS_NAMES, pixels, strict=True)
    }

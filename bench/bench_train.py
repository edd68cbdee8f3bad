"""Training input pipeline and training throughput: this project vs the seed tutorial's recipe.

Both sides get the same synthetic photos (200-500 px, like the real ones) and
the same batch size, and run in one process, alternating, so other load on
the machine hits both alike:

- project: the photos preprocessed once to TFRecord shards (as `petseg
  preprocess` would), read by `inputs.training_dataset` (parallel interleave
  + map, cache, shuffle, stateless augmentation, prefetch); the model from
  `model.build_model` (mobilenetv2_unet) compiled as `train` compiles it
  (Adam, cross-entropy, accuracy + mean IoU + per-class IoU).
- seed: the tutorial's recipe: decoded photos held in memory, `map(load_image)`
  (resize + /255 every first epoch) + `cache` + shuffle + batch + repeat,
  augmentation by two RandomFlip layers, prefetch; its MobileNetV2 U-Net with
  pix2pix upsample blocks, compiled with Adam + cross-entropy + accuracy.

The encoder is frozen on both sides, as in the seed (random weights stand in
for ImageNet's, which cannot be downloaded here; the compute is the same).

Printed: input-pipeline-only throughput (images/s, warm cache, the steady
state a training run sees after its first epoch), training throughput
(images/s over `--steps` steps, timed from the end of a warm-up step, after
a warm-up epoch), and the ratios. Goals:
project pipeline >= 10x what its training step consumes; project training
>= seed training.

    python bench/bench_train.py [--examples 256] [--image-size 128] [--batch-size 64] [--steps 8] [--rounds 2]
                                [--json FILE]

`measure(args)` returns the figures as a dict (`--json FILE` writes them too),
which `bench/run_all.py` puts into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HEADROOM_GOAL = 10.0  # project pipeline images/s over what its training step consumes
TRAINING_RATIO_GOAL = 1.0  # project training images/s over the seed recipe's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=256, help="training photos")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="timed training steps per round")
    p.add_argument("--pipeline-batches", type=int, default=50, help="timed batches per pipeline-only round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per measurement")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


# ------------------------------------------------------------------------- data
def synthetic_photos(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decoded photos [H, W, 3] uint8 and class masks [H, W] uint8 (0/1/2), 200-500 px."""
    from petseg.components.preprocess import trimap_to_classes
    from petseg.components.sources.synthetic import synthetic_scene

    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        image, trimap = synthetic_scene(rng, 200, 500)
        photos.append((image, trimap_to_classes(trimap)))
    return photos


def write_project_records(photos, out_dir: Path, image_size: int, per_shard: int = 256) -> Path:
    """The photos as preprocess writes them: resized with PIL, train shards (val = a copy of shard 0)."""
    import tensorflow as tf
    from PIL import Image

    from petseg.components.contracts import records
    from petseg.components.preprocess import resize_image, resize_mask

    out_dir.mkdir(parents=True)
    shards = max(1, -(-len(photos) // per_shard))
    for split in ("train", "val"):
        for shard in range(shards if split == "train" else 1):
            with tf.io.TFRecordWriter(str(out_dir / records.shard_name(split, shard, shards))) as writer:
                for i in range(shard * per_shard, min(len(photos), (shard + 1) * per_shard)):
                    image, mask = photos[i]
                    writer.write(
                        records.serialize_example(
                            f"p{i}", resize_image(Image.fromarray(image), image_size), resize_mask(mask, image_size)
                        )
                    )
    return out_dir


def project_dataset(records_dir: Path, image_size: int, batch_size: int, count: int):
    from petseg.components.core.params import AugmentParams, TrainParams
    from petseg.components.ml.inputs import training_dataset

    params = TrainParams(batch_size=batch_size, shuffle_buffer=1000, augment=AugmentParams(flip=True))
    return training_dataset(records_dir, image_size, params, count=count).repeat()


def seed_dataset(photos, image_size: int, batch_size: int):
    """The tutorial's pipeline: in-memory decoded photos, map(load_image), cache, shuffle, batch, repeat, Augment."""
    import keras
    import tensorflow as tf

    def generate():
        for image, mask in photos:
            yield {"image": image, "segmentation_mask": (mask + 1)[..., None]}  # TFDS gives the 1-3 trimap

    source = tf.data.Dataset.from_generator(
        generate,
        output_signature={
            "image": tf.TensorSpec([None, None, 3], tf.uint8),
            "segmentation_mask": tf.TensorSpec([None, None, 1], tf.uint8),
        },
    )

    def load_image(datapoint):
        image = tf.image.resize(datapoint["image"], (image_size, image_size))
        mask = tf.image.resize(datapoint["segmentation_mask"], (image_size, image_size), method="nearest")
        return tf.cast(image, tf.float32) / 255.0, mask - 1

    class Augment(keras.layers.Layer):
        def __init__(self, seed=42):
            super().__init__()
            self.augment_inputs = keras.layers.RandomFlip(mode="horizontal", seed=seed)
            self.augment_labels = keras.layers.RandomFlip(mode="horizontal", seed=seed)

        def call(self, inputs, labels):
            return self.augment_inputs(inputs), self.augment_labels(labels)

    return (
        source.map(load_image, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .shuffle(1000)
        .batch(batch_size)
        .repeat()
        .map(Augment())
        .prefetch(tf.data.AUTOTUNE)
    )


# ----------------------------------------------------------------------- models
def frozen_encoder_weights(image_size: int, folder: Path) -> Path:
    """Random MobileNetV2 weights in a file, so build_model freezes the encoder as it would ImageNet's."""
    import keras

    path = folder / "mobilenetv2_random.weights.h5"
    keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), include_top=False, weights=None
    ).save_weights(path)
    return path


def project_model(image_size: int, weights: Path):
    import keras

    from petseg.components.core.params import ModelParams, TrainParams
    from petseg.components.ml.model import build_model
    from petseg.components.train import loss_function, segmentation_metrics

    model = build_model(ModelParams(encoder_weights=str(weights)), image_size)
    model.compile(
        keras.optimizers.Adam(TrainParams().learning_rate),
        loss=loss_function("sparse_ce"),
        metrics=segmentation_metrics(),
    )
    return model


def seed_model(image_size: int):
    """The tutorial's U-Net: frozen MobileNetV2 skips + pix2pix upsample blocks (conv-T, BN, ReLU)."""
    import keras
    import tensorflow as tf

    base = keras.applications.MobileNetV2(input_shape=[image_size, image_size, 3], include_top=False, weights=None)
    names = [
        "block_1_expand_relu",
        "block_3_expand_relu",
        "block_6_expand_relu",
        "block_13_expand_relu",
        "block_16_project",
    ]
    down_stack = keras.Model(inputs=base.input, outputs=[base.get_layer(n).output for n in names])
    down_stack.trainable = False

    def upsample(filters):
        return keras.Sequential(
            [
                keras.layers.Conv2DTranspose(
                    filters,
                    3,
                    strides=2,
                    padding="same",
                    kernel_initializer=tf.random_normal_initializer(0.0, 0.02),
                    use_bias=False,
                ),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
            ]
        )

    inputs = keras.layers.Input(shape=[image_size, image_size, 3])
    skips = down_stack(inputs)
    x = skips[-1]
    for up, skip in zip([upsample(f) for f in (512, 256, 128, 64)], reversed(skips[:-1]), strict=True):
        x = keras.layers.Concatenate()([up(x), skip])
    x = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")(x)
    model = keras.Model(inputs=inputs, outputs=x)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


# ----------------------------------------------------------------- measuring
def pipeline_rate(ds, batches: int, batch_size: int) -> float:
    """Images/s pulled from an already-warm iterator."""
    start = time.perf_counter()
    for _ in range(batches):
        next(ds)
    return batches * batch_size / (time.perf_counter() - start)


def first_epoch_seconds(ds, batches: int) -> tuple:
    """Seconds to pull one epoch (fills the cache); returns (seconds, iterator)."""
    iterator = iter(ds)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start, iterator


def training_rate(model, ds, steps: int, batch_size: int, warmup_steps: int = 2) -> float:
    """Images/s over `steps` training steps, timed between batch ends after `warmup_steps` untimed ones."""
    import keras

    stamps = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(ds, steps_per_epoch=warmup_steps + steps, epochs=1, verbose=0, callbacks=[Clock()])
    return steps * batch_size / (stamps[-1] - stamps[warmup_steps - 1])


def measure(args: argparse.Namespace) -> dict:
    """Pipeline-only and training throughput of both sides, in alternating rounds; the figures as a dict."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    epoch_batches = -(-args.examples // args.batch_size)
    photos = synthetic_photos(args.examples)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        records_dir = write_project_records(photos, tmp / "records", args.image_size)
        sides = {
            "project": project_dataset(records_dir, args.image_size, args.batch_size, args.examples),
            "seed": seed_dataset(photos, args.image_size, args.batch_size),
        }
        first_epoch, iterators = {}, {}
        for name, ds in sides.items():
            first_epoch[name], iterators[name] = first_epoch_seconds(ds, epoch_batches)
        pipeline = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name in sides:
                pipeline[name].append(pipeline_rate(iterators[name], args.pipeline_batches, args.batch_size))

        models = {
            "project": project_model(args.image_size, frozen_encoder_weights(args.image_size, tmp)),
            "seed": seed_model(args.image_size),
        }
        for name, model in models.items():  # warm-up: tracing, first epoch's cache
            model.fit(sides[name], steps_per_epoch=max(2, epoch_batches), epochs=1, verbose=0)
        training = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, model in models.items():
                training[name].append(training_rate(model, sides[name], args.steps, args.batch_size))

    best = {k: {name: max(v) for name, v in d.items()} for k, d in (("pipeline", pipeline), ("training", training))}
    figures = dict(
        examples=args.examples,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        pipeline_batches=args.pipeline_batches,
        rounds=args.rounds,
        gpus=len(tf.config.list_physical_devices("GPU")),
        cpus=os.cpu_count(),
        load_after=os.getloadavg()[0],
        first_epoch_s=first_epoch,
        pipeline_rounds=pipeline,
        training_rounds=training,
        pipeline=best["pipeline"],
        training=best["training"],
        pipeline_ratio=best["pipeline"]["project"] / best["pipeline"]["seed"],
        training_ratio=best["training"]["project"] / best["training"]["seed"],
        headroom=best["pipeline"]["project"] / best["training"]["project"],
    )
    figures.update(
        headroom_goal=HEADROOM_GOAL,
        headroom_met=figures["headroom"] >= HEADROOM_GOAL,
        training_ratio_goal=TRAINING_RATIO_GOAL,
        training_ratio_met=figures["training_ratio"] >= TRAINING_RATIO_GOAL,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    f = measure(args)
    if args.json:
        args.json.write_text(json.dumps(f, indent=1))
    print(
        f"bench_train: {f['examples']} photos 200-500 px -> {f['image_size']} px, batch {f['batch_size']}, "
        f"{f['steps']} timed steps x {f['rounds']} rounds, mobilenetv2_unet (frozen encoder), "
        f"{f['gpus']} GPU(s), {f['cpus']} CPUs, load average {f['load_after']:.1f}"
    )
    print(f"{'':10s}{'first epoch s':>15s}{'pipeline img/s':>16s}{'training img/s':>16s}{'pipeline/training':>19s}")
    for name in ("project", "seed"):
        print(
            f"{name:10s}{f['first_epoch_s'][name]:15.2f}{f['pipeline'][name]:16.1f}{f['training'][name]:16.2f}"
            f"{f['pipeline'][name] / f['training'][name]:19.1f}"
        )
    print(f"project/seed pipeline throughput: {f['pipeline_ratio']:.2f}x")
    print(f"project/seed training throughput: {f['training_ratio']:.2f}x (goal >= {TRAINING_RATIO_GOAL:g})")
    print(f"project pipeline headroom over its training step: {f['headroom']:.1f}x (goal >= {HEADROOM_GOAL:g})")
    print(
        "best of rounds; rounds: "
        + "; ".join(
            f"{k} {name} " + ",".join(f"{v:.1f}" for v in values)
            for k in ("pipeline", "training")
            for name, values in f[f"{k}_rounds"].items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

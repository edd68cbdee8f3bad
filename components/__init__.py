"""The pipeline's steps, one module each, in the order they run:

    download.py          fetch the dataset (TFDS, the official archives or the synthetic set)
    drift_reference.py   find the report the served model's data was validated with
    validate.py          Great Expectations on the raw dataset; a critical failure stops the run
    preprocess.py        resize, split and write sharded TFRecords with a manifest
    train.py             train the U-Net and export the SavedModel
    evaluate.py          score it (and the served model) on the test split; bless it or not
    push.py              publish a blessed model as the next TF Serving version
    deploy.py            roll the pushed model out as a KServe InferenceService

What the steps share sits in folders named by role, each importing only the ones below it:

    card/        the model card push writes beside each version
    checks/      validate's parts: the per-example scan, the suite, the drift expectations
    ml/          the model, its input pipeline, metrics, plots, export, multi-worker set-up
    sources/     the official annotation lists and the synthetic set
    store/       the model store (TF Serving's model base path), its warm-up records, store access
    contracts/   what a writing step and a reading step agree on (layouts, records, signatures)
    core/        errors, file plumbing, progress, params

No step imports another step; pyproject.toml's import-linter contracts keep it so.
"""

"""Where each step puts the files a later step (or a runner) reads: one place for every output name.

The CLI's defaults and the Kubeflow components take these names from here;
tests/test_layout.py checks that every dvc.yaml stage passes exactly the CLI's
defaults, so the run folders below are named once.
"""

from __future__ import annotations

from pathlib import Path

# The run folders of one checkout: where `dvc repro` and the CLI's defaults put each step's output.
RAW_DIR = Path("data/raw")  # download
VALIDATION_DIR = Path("reports/validation")  # validate
RECORDS_DIR = Path("data/records")  # preprocess
MODELS_DIR = Path("models")  # train: savedmodel/, checkpoints/, metrics.json
LIVE_DIR = Path("dvclive")  # train: DVCLive's metrics and plots
EVALUATION_DIR = Path("reports/evaluate")  # evaluate
PUSH_RECORD = Path("reports/push.json")  # push
MODEL_CARD_REPORT = Path("reports/model_card")  # push: a copy of the card it wrote (components/card/)

# train: <out>/savedmodel is the exported SavedModel (what evaluate and push read);
# <out>/checkpoints is only for resuming an interrupted run.
SAVEDMODEL_DIR = "savedmodel"
CHECKPOINT_DIR = "checkpoints"

# train: <out>/metrics.json, the few numbers `dvc exp show` compares (DVCLive keeps the rest).
TRAIN_METRICS_FILE = "metrics.json"

# evaluate: <out>/metrics.json, <out>/blessing.json (components/contracts/blessing.py), and two plots.
METRICS_FILE = "metrics.json"
BLESSING_FILE = "blessing.json"
CONFUSION_PLOT = "confusion_matrix.png"
SAMPLES_PLOT = "sample_predictions.png"
EVALUATE_PLOTS = (CONFUSION_PLOT, SAMPLES_PLOT)

# push: the model card, `<version>/model_card/` in the model store (and a copy in MODEL_CARD_REPORT).
MODEL_CARD_DIR = "model_card"
MODEL_CARD_HTML = "model_card.html"
MODEL_CARD_MARKDOWN = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_FILES = (MODEL_CARD_HTML, MODEL_CARD_MARKDOWN, MODEL_CARD_JSON)


def savedmodel_dir(train_out: str | Path) -> Path:
    """The SavedModel train exported under its output folder."""
    return Path(train_out) / SAVEDMODEL_DIR


def train_metrics_file(train_out: str | Path) -> Path:
    """The headline training metrics train writes beside the SavedModel."""
    return Path(train_out) / TRAIN_METRICS_FILE


def checkpoint_dir(train_out: str | Path) -> Path:
    """The checkpoints train keeps under its output folder to resume an interrupted run."""
    return Path(train_out) / CHECKPOINT_DIR

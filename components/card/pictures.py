"""The card's pictures: evaluate's PNGs as they are, and the training curves drawn from DVCLive's numbers.

Pictures travel inside the HTML page as data: URIs, so the card is one file
that needs no network and no folder beside it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from petseg.components.contracts.layout import CONFUSION_PLOT, SAMPLES_PLOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CURVE_TITLES = {"loss": "Loss", "mean_iou": "Mean IoU", "accuracy": "Pixel accuracy"}


@dataclass(frozen=True)
class Picture:
    """A PNG the card shows (`png`), or None and the sentence saying why it is not there."""

    title: str
    png: bytes | None = None
    missing: str | None = None

    @property
    def data_uri(self) -> str:
        """The PNG as a data: URI for an <img src> (empty when there is no picture)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii") if self.png else ""


def evaluation_picture(evaluation_dir: Path | None, name: str, title: str) -> Picture:
    """One of evaluate's PNGs, read as is; a missing or non-PNG file is named, not shown."""
    if evaluation_dir is None:
        return Picture(title, missing=f"{title}: evaluate's folder was not given to push")
    path = evaluation_dir / name
    try:
        data = path.read_bytes()
    except OSError:
        return Picture(title, missing=f"{title}: {path} not found")
    if not data.startswith(PNG_SIGNATURE):
        return Picture(title, missing=f"{title}: {path} is not a PNG")
    return Picture(title, data)


def confusion_picture(evaluation_dir: Path | None) -> Picture:
    return evaluation_picture(evaluation_dir, CONFUSION_PLOT, "Confusion matrix")


def samples_picture(evaluation_dir: Path | None) -> Picture:
    return evaluation_picture(evaluation_dir, SAMPLES_PLOT, "Sample predictions")


def curves_picture(curves: dict[str, dict[str, list[tuple[int, float]]]] | None, missing: str | None) -> Picture:
    """Train against validation per metric, one panel each, epochs on x (DVCLive's values, not recomputed)."""
    title = "Training curves"
    if not curves:
        return Picture(title, missing=missing or f"{title}: none recorded")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in CURVE_TITLES if m in curves]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for split, style in (("train", "-o"), ("val", "--s")):
            points = curves[metric].get(split)
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, style, markersize=3, label="validation" if split == "val" else split)
        ax.set_title(CURVE_TITLES[metric], fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return Picture(title, buffer.getvalue())

"""The evaluation plots: the confusion matrix and a sheet of sample predictions, as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petseg.components.ml.metrics import SegmentationMetrics


def plot_confusion_matrix(metrics: SegmentationMetrics, path: Path) -> None:
    """Row-normalised confusion matrix (recall per true class) with pixel counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = metrics.confusion
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, np.float64), where=rows > 0)
    k = len(metrics.class_names)
    fig, ax = plt.subplots(figsize=(1.6 * k + 2.4, 1.4 * k + 1.6))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), metrics.class_names)
    ax.set_yticks(range(k), metrics.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{share[i, j]:.1%}\n{counts[i, j]:,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_title(f"mean IoU {metrics.mean_iou:.3f}, pixel accuracy {metrics.pixel_accuracy:.3f}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: tuple[str, ...], path: Path
) -> None:
    """One row per example: input image, true mask, predicted mask (the TF tutorial's display())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("Input Image", "True Mask", "Predicted Mask")
    if not samples:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no samples (evaluate.sample_predictions is 0)", ha="center", va="center")
    else:
        fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
        for row, example in zip(axes, samples, strict=True):
            for col, (ax, picture) in enumerate(zip(row, example, strict=True)):
                if col == 0:
                    ax.imshow(picture)
                else:
                    ax.imshow(picture, vmin=0, vmax=len(class_names) - 1, cmap="viridis", interpolation="nearest")
                ax.set_title(titles[col])
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)

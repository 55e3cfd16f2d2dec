"""Figures, always drawn from files a run wrote, so they can be redrawn later."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxdann import run_folder  # noqa: E402

__all__ = ["plot_curves", "plot_confusion", "plot_heatmap"]


def plot_curves(metrics_path: str, output_path: str, title: str = "") -> None:
    """The seed's figures: loss and accuracy of the three paths per epoch, plus target accuracy."""
    rows = run_folder.read_metrics(metrics_path)
    epochs = [row["epoch"] for row in rows]

    def series(key):
        return [np.nan if row.get(key) is None else row[key] for row in rows]

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    loss_axis.plot(epochs, series("class_loss"), label="classifier (source)")
    accuracy_axis.plot(epochs, series("source_accuracy"), label="classifier (source, train)")
    if any(row.get("domain_loss_source") is not None for row in rows):
        loss_axis.plot(epochs, series("domain_loss_source"), label="domain classifier (source)")
        loss_axis.plot(epochs, series("domain_loss_target"), label="domain classifier (target)")
        accuracy_axis.plot(
            epochs, series("domain_accuracy_source"), label="domain classifier (source)"
        )
        accuracy_axis.plot(
            epochs, series("domain_accuracy_target"), label="domain classifier (target)"
        )
    accuracy_axis.plot(epochs, series("target_accuracy"), "k--", label="target accuracy (test)")
    if any(row.get("validation_accuracy") is not None for row in rows):
        accuracy_axis.plot(epochs, series("validation_accuracy"), "o", label="validation accuracy")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="losses")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracies", ylim=(0, 1.02))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)
    plt.close(figure)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], output_path: str) -> None:
    """Rows: true class; columns: predicted class; cells: counts."""
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.7 * len(class_names), 0.8 + 0.7 * len(class_names))
    )
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axis.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title="target confusion matrix")
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)
    plt.close(figure)


def plot_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    output_path: str,
    xlabel: str = "learning rate",
    ylabel: str = "optimizer",
) -> None:
    """A grid of accuracies (rows x columns), each cell annotated; NaN cells are left blank."""
    values = np.asarray(values, dtype=float)
    figure, axis = plt.subplots(
        figsize=(1.6 + 1.3 * len(column_labels), 1.2 + 0.8 * len(row_labels))
    )
    image = axis.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0)
    axis.set_xticks(range(len(column_labels)), column_labels)
    axis.set_yticks(range(len(row_labels)), row_labels)
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            color = "black" if value > 0.6 else "white"
            axis.text(col, row, f"{value:.3f}", ha="center", va="center", color=color)
    figure.colorbar(image, ax=axis)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)
    plt.close(figure)

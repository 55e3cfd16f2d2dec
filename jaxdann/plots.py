"""Figures, always drawn from files a run wrote, so they can be redrawn later."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from jaxdann.training import run_folder  # noqa: E402

__all__ = ["plot_curves", "plot_confusion", "plot_heatmap", "curve_panels"]

# Every metrics.jsonl row has these besides the method's own metrics.
_EVALUATION = ("target_accuracy", "validation_accuracy")
_NOT_CURVES = ("epoch", "epoch_time_s", *_EVALUATION)
_LINE = {"marker": "o", "markersize": 4}  # markers: a one-epoch run still shows its points


def _numeric(rows: list[dict], key: str) -> bool:
    return any(
        isinstance(row.get(key), int | float) and not isinstance(row.get(key), bool) for row in rows
    )


def curve_panels(rows: list[dict], metrics: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Which metrics go on which panel: ``{"losses": [...], "accuracies": [...], name: [name]}``.

    ``metrics``: the method's ``epoch_metrics``; by default every number in the rows other than
    the epoch, its time and the evaluations. Names with ``loss`` share the loss panel, names with
    ``accuracy`` the accuracy panel (with target and validation accuracy); any other (a learning
    rate, a schedule's coefficient) gets a panel of its own. Metrics no row holds are left out.
    """
    if metrics is None:
        metrics = list(dict.fromkeys(key for row in rows for key in row))
    metrics = [key for key in metrics if key not in _NOT_CURVES and _numeric(rows, key)]
    panels: dict[str, list[str]] = {"losses": [], "accuracies": []}
    for key in metrics:
        if "loss" in key:
            panels["losses"].append(key)
        elif "accuracy" in key:
            panels["accuracies"].append(key)
        else:
            panels[key] = [key]
    panels["accuracies"] += [key for key in _EVALUATION if _numeric(rows, key)]
    return {name: keys for name, keys in panels.items() if keys}


def plot_curves(
    metrics_path: str, output_path: str, title: str = "", metrics: Sequence[str] | None = None
) -> None:
    """Each epoch metric of a run against the epoch (losses, accuracies with target and
    validation accuracy, then one panel per other metric); see :func:`curve_panels`."""
    rows = run_folder.read_metrics(metrics_path)
    epochs = [row["epoch"] for row in rows]
    panels = curve_panels(rows, metrics)
    columns = 2 if len(panels) > 1 else 1
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6 * columns, 4.2 * lines), squeeze=False)
    for axis, (name, keys) in zip(axes.flat, panels.items(), strict=False):
        for key in keys:
            values = [np.nan if row.get(key) is None else row[key] for row in rows]
            style = {"color": "k", "linestyle": "--"} if key == "target_accuracy" else {}
            axis.plot(epochs, values, label=_label(key), **_LINE, **style)
        _dress(axis, name, keys, rows)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)
    plt.close(figure)


def _label(key: str) -> str:
    return {"target_accuracy": "target accuracy (test)"}.get(key, key.replace("_", " "))


def _dress(axis, name: str, keys: list[str], rows: list[dict]) -> None:
    """Titles, limits and integer epoch ticks for one panel."""
    epochs = [row["epoch"] for row in rows]
    axis.set(xlabel="epoch", title=name.replace("_", " "))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if name == "losses":
        axis.set_ylabel("loss")
    elif name == "accuracies":
        axis.set(ylabel="accuracy", ylim=(0, 1.02))
    else:
        values = [row[name] for row in rows if isinstance(row.get(name), int | float)]
        if values and min(values) > 0 and max(values) > 10 * min(values):
            axis.set_yscale("log")  # a decaying learning rate spans decades
    axis.grid(alpha=0.3)
    if name in ("losses", "accuracies"):  # a panel of its own is titled by its metric
        axis.legend(fontsize=8)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], output_path: str) -> None:
    """Rows: true class; columns: predicted class; cells: counts."""
    matrix = np.asarray(matrix)
    figure, axis = plt.subplots(
        figsize=(2.4 + 0.7 * len(class_names), 1.4 + 0.7 * len(class_names))
    )
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axis.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis, label="images")
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

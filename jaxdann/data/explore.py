"""What a dataset folder holds: per-class image counts of each domain, their statistics, a chart.

Command line: ``python -m jaxdann.data [--root DIR] [--domains a,b] [--on-bad skip]
[--plot FILE.png]`` prints the counts table for a ``ROOT/<domain>/<class>/<image>`` folder (by
default PACS's four domains in ``$JAXDANN_PACS_ROOT``). Exit status: 0 done, 1 the data cannot be
read, 2 the arguments were refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdann.data import folder, pacs
from jaxdann.errors import ConfigError, UserError, exit_code

__all__ = ["check_plot_path", "explore", "format_stats", "main", "plot_class_distribution"]


def explore(
    root: folder.PathLike, domains: Sequence[str] | None = None, *, on_bad: str = "error"
) -> dict[str, dict[str, Any]]:
    """Per-class image counts of each domain (default: PACS's) and their total, min, max, mean
    and std; ``on_bad="skip"`` ignores files that are not images, with a warning.

    ``std`` is the population standard deviation (``np.std``) of the per-class counts;
    ``min_class`` and ``max_class`` name the (first) class reaching the extreme.
    """
    domains = tuple(domains) if domains is not None else pacs.DOMAINS
    class_names = folder.check_classes(root, domains)
    stats = {}
    for domain in domains:
        _, labels, _ = folder.list_domain(root, domain, on_bad=on_bad)
        counts = np.bincount(labels, minlength=len(class_names))
        stats[domain] = {
            "counts": {name: int(count) for name, count in zip(class_names, counts, strict=True)},
            "total": int(counts.sum()),
            "min": int(counts.min()),
            "min_class": class_names[int(counts.argmin())],
            "max": int(counts.max()),
            "max_class": class_names[int(counts.argmax())],
            "mean": float(counts.mean()),
            "std": float(counts.std()),
        }
    return stats


def _plot_formats() -> dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg.get_supported_filetypes()


def check_plot_path(path: folder.PathLike) -> str:
    """``path`` as a string; a ConfigError when its extension names no format matplotlib writes."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    formats = sorted(_plot_formats())
    if extension not in formats:
        raise ConfigError(
            f"--plot {path}: cannot write a chart as {extension or 'a file without extension'!r}; "
            f"name a file ending in one of {', '.join('.' + f for f in formats)}."
        )
    return path


def plot_class_distribution(stats: dict[str, dict[str, Any]], path: folder.PathLike) -> None:
    """Grouped bar chart of ``explore`` output: one group per class, one bar per domain.

    The format follows the file's extension (``.png``, ``.pdf``, ``.svg``, ...); missing parent
    folders are created. A path that cannot be written is a ConfigError.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_plot_path(path)
    domains = list(stats)
    class_names = list(stats[domains[0]]["counts"])
    positions = np.arange(len(class_names))
    width = 0.8 / len(domains)
    figure = Figure(figsize=(max(6.0, 1.3 * len(class_names)), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, domain in enumerate(domains):
        counts = [stats[domain]["counts"][name] for name in class_names]
        offsets = positions + (index - (len(domains) - 1) / 2) * width
        axes.bar(offsets, counts, width, label=f"{domain} ({stats[domain]['total']})")
    axes.set_xticks(positions, class_names)
    axes.set_ylabel("images")
    axes.set_title("Images per class and domain")
    axes.legend(title="domain (total)")
    axes.grid(axis="y", alpha=0.3)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        figure.savefig(path, dpi=120)
    except OSError as error:
        raise ConfigError(
            f"--plot {path}: cannot write it ({error.strerror or error}); choose a writable file."
        ) from None


def format_stats(stats: dict[str, dict[str, Any]]) -> str:
    """``explore`` output as a text table: counts per class, then summary per domain."""
    domains = list(stats)
    class_names = list(stats[domains[0]]["counts"])
    first = max(len("class"), *(len(name) for name in class_names), len("total"))
    widths = [max(len(domain), 6) for domain in domains]
    lines = [
        "class".ljust(first) + "".join(f"  {d:>{w}}" for d, w in zip(domains, widths, strict=True))
    ]
    for name in class_names + ["total"]:
        cells = [
            stats[d]["total"] if name == "total" else stats[d]["counts"][name] for d in domains
        ]
        lines.append(
            name.ljust(first) + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    lines.append("")
    name_width = max(len("domain"), *(len(domain) for domain in domains))
    extreme_width = max(
        len(f"{s[k]} ({s[k + '_class']})") for s in stats.values() for k in ("min", "max")
    )
    lines.append(
        f"{'domain':<{name_width}}  {'total':>6}  {'min':<{extreme_width}}  "
        f"{'max':<{extreme_width}}  {'mean':>8}  {'std':>8}"
    )
    for domain, s in stats.items():
        low = f"{s['min']} ({s['min_class']})"
        high = f"{s['max']} ({s['max_class']})"
        lines.append(
            f"{domain:<{name_width}}  {s['total']:>6}  {low:<{extreme_width}}  "
            f"{high:<{extreme_width}}  {s['mean']:>8.2f}  {s['std']:>8.2f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.data",
        description="Per-class image counts of the domains of a <domain>/<class>/<image> folder.",
    )
    parser.add_argument(
        "--root",
        default=pacs.default_root(),
        help="dataset folder (default: $JAXDANN_PACS_ROOT or %(default)s)",
    )
    parser.add_argument(
        "--plot", help="also write a grouped bar chart of the counts to this file (.png, .pdf, ...)"
    )
    parser.add_argument(
        "--domains",
        default=",".join(pacs.DOMAINS),
        help="comma-separated domain folders (default: PACS's four)",
    )
    parser.add_argument(
        "--on-bad",
        "--on_bad",
        dest="on_bad",
        choices=folder.ON_BAD,
        default="error",
        help="files that are not images in class folders: stop (error) or ignore them (skip)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxdann.data``: print the per-class counts table, optionally plot it."""
    parser = _parser()
    args = parser.parse_args(argv)
    domains = [domain.strip() for domain in args.domains.split(",") if domain.strip()]
    if not domains:
        parser.error("--domains is empty; give e.g. --domains art_painting,photo")
    try:
        if args.plot:
            check_plot_path(args.plot)  # before the counts, which take a while on a large tree
        root = folder.require_root(
            args.root,
            "give --root the dataset folder (<domain>/<class>/<image>) or set $JAXDANN_PACS_ROOT.",
        )
        stats = explore(root, domains, on_bad=args.on_bad)
        print(f"Images per class in {root}\n")
        print(format_stats(stats))
        if args.plot:
            plot_class_distribution(stats, args.plot)
            print(f"\nwrote {args.plot}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    return 0

"""What a dataset holds: images per domain, split and class, their statistics, a chart, and the
files that cannot be read.

Command line: ``python -m jaxdann.data [--dataset NAME] [--root DIR] [--domains a,b]
[--on-bad skip] [--plot FILE.png]`` prints the counts table of a registered dataset
(:data:`jaxdann.data.DATASETS`; default ``pacs`` in ``$JAXDANN_PACS_ROOT``; ``folder`` reads any
``ROOT/<domain>/<class>/<image>``): one column per domain, and per split where the dataset has
official split lists. Every listed file is decoded and each one that cannot be read (truncated
files included) is named. Exit status: 0 done, 1 the data cannot be read (or some files cannot),
2 the arguments were refused.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from jaxdann.data import DATASETS, folder, pacs
from jaxdann.data.dataset import ALL
from jaxdann.errors import ConfigError, DataError, exit_code, is_user_error

__all__ = [
    "check_plot_path",
    "explore",
    "explore_dataset",
    "format_stats",
    "main",
    "plot_class_distribution",
    "unreadable_files",
]


def _summary(counts: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    return {
        "counts": {name: int(count) for name, count in zip(class_names, counts, strict=True)},
        "total": int(counts.sum()),
        "min": int(counts.min()),
        "min_class": class_names[int(counts.argmin())],
        "max": int(counts.max()),
        "max_class": class_names[int(counts.argmax())],
        "mean": float(counts.mean()),
        "std": float(counts.std()),
    }


def _data_settings(dataset_name: str, root: str, on_bad: str) -> ml_collections.ConfigDict:
    """The ``data`` settings a listing reads (the base config's, with this root)."""
    from jaxdann.config import base_config

    data = base_config().data
    data.name, data.root, data.on_bad = dataset_name, root, on_bad
    return data


def _count(
    dataset_name: str, root: str, domains: Sequence[str] | None, on_bad: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(stats keyed ``domain`` or ``domain/split``, every listed file's full path)."""
    dataset = DATASETS.get(dataset_name)
    data = _data_settings(dataset_name, root, on_bad)
    domains = tuple(domains) if domains else dataset.present_domains(data)
    if not domains:
        raise DataError(
            f"{root or 'the default root'} holds none of the {dataset_name} dataset's domains "
            f"({', '.join(dataset.domain_names(data))}); give --root its folder."
        )
    for domain in domains:
        dataset.check_domain(domain, "--domains", data)
    class_names = dataset.class_names(data, list(domains))
    stats, files = {}, []
    for domain in domains:
        for split in dataset.listed_splits(data, domain):
            base, paths, labels = dataset.listing(domain, split, data)
            files += [os.path.join(base, path) for path in paths]
            column = domain if split == ALL else f"{domain}/{split}"
            stats[column] = _summary(np.bincount(labels, minlength=len(class_names)), class_names)
    return stats, list(dict.fromkeys(files))


def explore_dataset(
    dataset_name: str, root: str, domains: Sequence[str] | None = None, *, on_bad: str = "error"
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per-class image counts of each domain (and split, where the dataset lists splits) with
    their total, min, max, mean and std, keyed ``domain`` or ``domain/split``; and the files
    that cannot be read (full paths, with the reason), found by decoding every listed file.
    No ``domains``: those of the dataset's domains the root holds.

    ``std`` is the population standard deviation (``np.std``) of the per-class counts;
    ``min_class`` and ``max_class`` name the (first) class reaching the extreme.
    """
    stats, files = _count(dataset_name, root, domains, on_bad)
    return stats, unreadable_files(files)


def explore(
    root: folder.PathLike,
    domains: Sequence[str] | None = None,
    *,
    on_bad: str = "error",
    dataset: str = "folder",
) -> dict[str, dict[str, Any]]:
    """:func:`explore_dataset`'s counts without opening the files (default: the generic
    folder reader over ``root``'s domain folders)."""
    return _count(dataset, os.fspath(root), domains, on_bad)[0]


# Size a JPEG is decoded at when checked: the whole entropy-coded stream is still read (so a
# truncated or corrupt file fails as it does in preprocessing), but the pixels come out 1/8 size.
_CHECK_SIZE = (32, 32)


def _unreadable(path: str) -> str | None:
    """``path`` with the reason when decoding it fails as preprocessing would, else None."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", _CHECK_SIZE)  # a no-op for formats without reduced decoding
            image.load()
    except folder.DECODE_ERRORS as error:
        return f"{path} ({type(error).__name__}: {error})"
    return None


def unreadable_files(paths: Sequence[str], workers: int | None = None) -> list[str]:
    """The ``paths`` PIL cannot decode (truncated or corrupt included), each with the reason."""
    if not paths:
        return []
    with concurrent.futures.ThreadPoolExecutor(workers or folder.default_workers()) as pool:
        return [reason for reason in pool.map(_unreadable, paths, chunksize=64) if reason]


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
        description="Images per domain, split and class of a dataset, and its unreadable files.",
    )
    parser.add_argument(
        "--dataset",
        default="pacs",
        help=f"a registered dataset: {', '.join(DATASETS.names())} (default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        default="",
        help=f"dataset folder (default: the dataset's, PACS: $JAXDANN_PACS_ROOT or "
        f"{pacs.default_root()})",
    )
    parser.add_argument(
        "--plot", help="also write a grouped bar chart of the counts to this file (.png, .pdf, ...)"
    )
    parser.add_argument(
        "--domains", default="", help="comma-separated domains (default: all of the dataset's)"
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


def _report(stats: dict, unreadable: list[str], where: str) -> None:
    print(f"Images per class in {where}\n")
    print(format_stats(stats))
    if unreadable:
        print(f"\n{len(unreadable)} files cannot be read:")
        print("\n".join(f"  {line}" for line in unreadable))


def _root_of(dataset_name: str, root: str) -> str:
    """The folder a dataset reads (``root``, or its default), or "embedded" for none."""
    dataset = DATASETS.get(dataset_name)
    if not hasattr(dataset, "root"):
        return root or "embedded"
    return dataset.root(_data_settings(dataset_name, root, "error")) or "no root"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxdann.data``: print the per-class counts table, optionally plot it."""
    parser = _parser()
    args = parser.parse_args(argv)
    domains = [domain.strip() for domain in args.domains.split(",") if domain.strip()]
    if args.domains and not domains:
        parser.error("--domains is empty; give e.g. --domains art_painting,photo")
    try:
        if args.plot:
            check_plot_path(args.plot)  # before the counts, which take a while on a large tree
        stats, unreadable = explore_dataset(args.dataset, args.root, domains, on_bad=args.on_bad)
        _report(stats, unreadable, f"{args.dataset} ({_root_of(args.dataset, args.root)})")
        if args.plot:
            plot_class_distribution(stats, args.plot)
            print(f"\nwrote {args.plot}")
        if unreadable:
            raise DataError(
                f"{len(unreadable)} files of {args.dataset} cannot be read (listed above); "
                "replace or remove them, or train with --config.data.on_bad=skip."
            )
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    return 0

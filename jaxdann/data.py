"""PACS images: listing, checking, decoding once into a disk cache, and summary statistics.

Data flows one way: ``ROOT/<domain>/<class>/<image>`` files -> ``list_domain`` (paths, labels)
-> ``load_domain`` (uint8 ``[N, crop, crop, 3]`` arrays, decoded in parallel and cached as
``.npy`` by ``jaxdann.image_cache``) -> ``normalize`` (float32, ImageNet statistics, runs on
the device inside ``jit``).

Preprocessing matches torchvision's ``Resize(256) + CenterCrop(224)`` on PIL images, so a
model converted from torchvision sees the inputs it was trained on.

Command line: ``python -m jaxdann.data --root DIR [--plot FILE.png] [--domains a,b]`` prints
per-class counts and their statistics for each domain.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import os
import struct
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxdann import image_cache

DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared case-insensitively
SPLITS = ("train", "crossval", "test")
ON_BAD = ("error", "skip")

# Operating-system clutter that is never data; anything else that is not an image is reported.
_JUNK_FILES = frozenset({"Thumbs.db", "desktop.ini"})
# Exceptions PIL raises for unreadable, truncated or corrupt files.
DECODE_ERRORS = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
# Bump when the cached arrays would change for the same inputs (preprocessing, layout).
_MAX_LISTED = 10
_SKIP_HINT = "pass on_bad='skip' (config key data.on_bad=skip) to leave them out"

PathLike = str | os.PathLike


class DataError(ValueError):
    """Bad user data: the message is one sentence naming the path and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """One decoded PACS domain, ready to batch.

    ``images`` are preprocessed (resized and centre-cropped) but not normalised, so they stay
    uint8 on the host and are normalised on device with ``normalize``.
    """

    name: str
    images: np.ndarray  # uint8 [N, crop, crop, 3]
    labels: np.ndarray  # int32 [N]
    class_names: tuple[str, ...]
    paths: tuple[str, ...]  # relative to the root, same order as images

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_root() -> str:
    """PACS root: ``$JAXDANN_PACS_ROOT`` if set, else ``../shared/data/PACS`` (may not exist)."""
    return os.environ.get("JAXDANN_PACS_ROOT") or os.path.join("..", "shared", "data", "PACS")


def default_cache_dir() -> str:
    """Where decoded domains are cached: ``$JAXDANN_CACHE_DIR`` if set, else ~/.cache/jaxdann."""
    return os.environ.get("JAXDANN_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxdann"
    )


# --------------------------------------------------------------------------- listing


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _JUNK_FILES


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def format_paths(items: Sequence[str]) -> str:
    """Up to ``_MAX_LISTED`` items joined by commas, with the total when some are left out."""
    shown = ", ".join(str(item) for item in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... ({len(items)} in all)"
    return shown


def _check_on_bad(on_bad: str) -> None:
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}; set data.on_bad to one.")


def _domain_dir(root: PathLike, domain: str) -> str:
    """The domain's folder, after checking that the root and the folder exist."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(
            f"PACS root {root!r} does not exist or is not a folder; it should contain "
            "art_painting/ cartoon/ photo/ sketch/ folders, so pass --config.data.root or set "
            "$JAXDANN_PACS_ROOT to such a folder."
        )
    domain_dir = os.path.join(root, domain)
    if not os.path.isdir(domain_dir):
        found = sorted(
            name
            for name in os.listdir(root)
            if not _is_hidden(name) and os.path.isdir(os.path.join(root, name))
        )
        raise DataError(
            f"Domain folder {domain_dir!r} does not exist; domains found in {root!r}: "
            f"{', '.join(found) or 'none'}, so fix the domain name or the root."
        )
    return domain_dir


def _class_folders(root: PathLike, domain: str) -> tuple[str, ...]:
    """Sorted class folder names of one domain; their order defines the labels."""
    domain_dir = _domain_dir(root, domain)
    names = sorted(
        name
        for name in os.listdir(domain_dir)
        if not _is_hidden(name) and os.path.isdir(os.path.join(domain_dir, name))
    )
    if not names:
        raise DataError(
            f"Domain folder {domain_dir!r} has no class folders; lay it out as "
            f"{os.path.join(domain_dir, '<class>', '<image>')}."
        )
    return tuple(names)


def _split_file(root: str, domain: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, got {split!r}.")
    name = f"{domain}_{split}_kfold.txt"
    candidates = [os.path.join(root, name), os.path.join(root, "splits", name)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DataError(
        f"Split file for domain {domain!r}, split {split!r} not found (looked at "
        f"{' and '.join(repr(c) for c in candidates)}); put the official PACS split list there "
        "or use split=None to read the whole domain."
    )


def _read_split(
    root: str, domain: str, split: str, class_names: tuple[str, ...]
) -> tuple[list[str], list[int]]:
    """Paths and labels from an official PACS ``<domain>_<split>_kfold.txt`` list."""
    split_path = _split_file(root, domain, split)
    paths: list[str] = []
    labels: list[int] = []
    missing: list[str] = []
    disagreeing: list[str] = []
    with open(split_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.strip().rsplit(maxsplit=1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DataError(
                    f"Line {line_number} of split file {split_path!r} is {line.strip()!r}; each "
                    "line must be '<relative image path> <1-based class number>'."
                )
            relative = fields[0].replace("\\", "/").removeprefix("./")
            number = int(fields[1])
            if not os.path.isfile(os.path.join(root, relative)):
                missing.append(relative)
                continue
            folder = relative.split("/")[-2] if "/" in relative else ""
            if not 1 <= number <= len(class_names) or class_names[number - 1] != folder:
                disagreeing.append(f"{relative} (class number {number}, folder {folder!r})")
                continue
            paths.append(relative)
            labels.append(number - 1)
    if missing:
        raise DataError(
            f"{len(missing)} files listed in split file {split_path!r} do not exist under "
            f"{root!r}: {format_paths(missing)}; fix the split file or the root."
        )
    if disagreeing:
        raise DataError(
            f"{len(disagreeing)} lines of split file {split_path!r} give a class number that "
            f"disagrees with the image's folder (classes numbered from 1 in sorted order "
            f"{', '.join(class_names)}): {format_paths(disagreeing)}; fix the split file."
        )
    if not paths:
        raise DataError(f"Split file {split_path!r} lists no images; give it some lines.")
    return paths, labels


def list_domain(
    root: PathLike,
    domain: str,
    *,
    split: str | None = None,
    on_bad: str = "error",
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Image paths (relative to ``root``), int32 labels and class names of one domain.

    Walks ``ROOT/<domain>/<class>/<image>``; labels index the sorted class names. With
    ``split`` ("train", "crossval" or "test") the images come from the official PACS list
    ``ROOT/<domain>_<split>_kfold.txt`` (or ``ROOT/splits/...``) instead. Hidden files are
    ignored; other non-image files are an error, or a warning with ``on_bad="skip"``.
    """
    _check_on_bad(on_bad)
    root = os.fspath(root)
    class_names = _class_folders(root, domain)
    if split is not None:
        paths, labels = _read_split(root, domain, split, class_names)
        return paths, np.asarray(labels, dtype=np.int32), class_names

    domain_dir = os.path.join(root, domain)
    paths = []
    labels = []
    unexpected = [
        os.path.join(domain_dir, name)
        for name in sorted(os.listdir(domain_dir))
        if not _is_hidden(name) and not os.path.isdir(os.path.join(domain_dir, name))
    ]
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(domain_dir, class_name)
        images = []
        for name in sorted(os.listdir(class_dir)):
            if _is_hidden(name):
                continue
            if _is_image(name) and os.path.isfile(os.path.join(class_dir, name)):
                images.append(name)
            else:
                unexpected.append(os.path.join(class_dir, name))
        if not images:
            raise DataError(
                f"Class folder {class_dir!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); add "
                "its images or remove the folder from every domain."
            )
        paths.extend(f"{domain}/{class_name}/{name}" for name in images)
        labels.extend([label] * len(images))
    if unexpected:
        message = (
            f"{len(unexpected)} entries in {domain_dir!r} are not images "
            f"({', '.join(IMAGE_EXTENSIONS)}) inside class folders: {format_paths(unexpected)}"
        )
        if on_bad == "error":
            raise DataError(f"{message}; remove them, or {_SKIP_HINT}.")
        warnings.warn(f"{message}; ignoring them (on_bad='skip').", stacklevel=2)
    return paths, np.asarray(labels, dtype=np.int32), class_names


def check_classes(root: PathLike, domains: Sequence[str]) -> tuple[str, ...]:
    """The class names shared by all ``domains``; a DataError says which domain lacks which."""
    if not domains:
        raise ValueError("check_classes needs at least one domain; pass e.g. DOMAINS.")
    per_domain = {domain: _class_folders(root, domain) for domain in domains}
    everything = sorted(set().union(*per_domain.values()))
    problems = []
    for class_name in everything:
        have = [domain for domain, names in per_domain.items() if class_name in names]
        lack = [domain for domain, names in per_domain.items() if class_name not in names]
        if lack:
            problems.append(
                f"{class_name!r} is missing from {', '.join(lack)} (present in {', '.join(have)})"
            )
    if problems:
        raise DataError(
            f"Class folders differ between domains in {os.fspath(root)!r}: {'; '.join(problems)}; "
            "give every domain the same class folders."
        )
    return tuple(everything)


# --------------------------------------------------------------------------- decoding


def preprocess_image(path: PathLike, *, resize: int = 256, crop: int = 224) -> np.ndarray:
    """Decode one image as torchvision's ``Resize(resize) + CenterCrop(crop)`` would: uint8 HWC.

    Any PIL mode (grey, palette, RGBA, CMYK, ...) becomes RGB; the shorter side becomes
    ``resize`` with PIL bilinear (antialiased) resampling; the centre crop rounds like torchvision.
    Raises PIL's errors for unreadable or truncated files.
    """
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize}); fix data.crop.")
    with Image.open(path) as image:
        image.load()  # decode now, so truncated files fail here
        image = image.convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.BILINEAR)
    top = int(round((new_height - crop) / 2.0))
    left = int(round((new_width - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return np.asarray(image, dtype=np.uint8)


def _decode_into(
    output: np.ndarray, paths: Sequence[str], resize: int, crop: int
) -> list[tuple[int, str]]:
    """Decode ``paths`` into the rows of ``output``; failures come back as (index, reason)."""
    failures = []
    for index, path in enumerate(paths):
        try:
            output[index] = preprocess_image(path, resize=resize, crop=crop)
        except DECODE_ERRORS as error:
            failures.append((index, f"{type(error).__name__}: {error}"))
    return failures


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _decode_all(
    paths: Sequence[str],
    *,
    resize: int,
    crop: int,
    workers: int,
    progress: bool,
    description: str,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode ``paths`` into one uint8 array, chunks of images in parallel threads.

    Threads, not processes: Pillow releases the GIL while it decodes and resizes, so threads
    use every core, write straight into the shared array, and need no ``__main__`` guard or
    fork of a multithreaded JAX process. Measured on 2 cores they beat a process pool.
    """
    count = len(paths)
    images = np.zeros((count, crop, crop, 3), dtype=np.uint8)
    chunk = min(64, max(8, math.ceil(count / (4 * workers))))
    failures: list[tuple[int, str]] = []
    with (
        tqdm(
            total=count,
            desc=description,
            unit="img",
            disable=not progress or count == 0 or not sys.stderr.isatty(),
        ) as bar,
        concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor,
    ):
        futures = {
            executor.submit(
                _decode_into,
                images[start : start + chunk],
                paths[start : start + chunk],
                resize,
                crop,
            ): start
            for start in range(0, count, chunk)
        }
        for future in concurrent.futures.as_completed(futures):
            start = futures[future]
            failures.extend((start + index, reason) for index, reason in future.result())
            bar.update(min(chunk, count - start))
    return images, sorted(failures)


# --------------------------------------------------------------------------- loading


def apply_bad_policy(root: str, domain: str, bad: Sequence[Sequence[str]], on_bad: str) -> None:
    """Raise for undecodable images (listing every one), or warn when skipping them."""
    if not bad:
        return
    listing = "; ".join(f"{os.path.join(root, path)} ({reason})" for path, reason in bad)
    message = f"{len(bad)} images in {os.path.join(root, domain)!r} could not be decoded: {listing}"
    if on_bad == "error":
        raise DataError(f"{message}; replace or remove them, or {_SKIP_HINT}.")
    warnings.warn(f"{message}; skipping them (on_bad='skip').", stacklevel=3)


def load_domain(
    root: PathLike,
    domain: str,
    *,
    resize: int = 256,
    crop: int = 224,
    split: str | None = None,
    cache_dir: PathLike | Literal[False] | None = None,
    on_bad: str = "error",
    workers: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Domain:
    """Decode one domain into uint8 arrays, once: later calls read the ``.npy`` cache.

    The cache (``cache_dir``, default ``default_cache_dir()``; ``False`` disables it) is keyed
    by the domain, split, sizes and every file's path, size and mtime, so editing, adding or
    removing an image decodes again. Undecodable images are all reported in one DataError, or
    left out with a warning when ``on_bad="skip"``. ``workers`` defaults to all cores.

    ``shard=(index, count)`` keeps every ``count``-th file from ``index`` (in listing order), so
    each host of a multi-host run decodes and holds only its own share.
    """
    _check_on_bad(on_bad)
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize}); fix data.crop.")
    root = os.fspath(root)
    paths, labels, class_names = list_domain(root, domain, split=split, on_bad=on_bad)
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {shard}: need 0 <= index < count.")
    if count > 1:
        paths, labels = paths[index::count], labels[index::count]

    use_cache = cache_dir is not False
    if use_cache:
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        key = image_cache.cache_key(root, domain, split, resize, crop, paths, labels, class_names)
        prefix = image_cache.cache_prefix(domain, split, resize, crop)
        if count > 1:  # shards have entries of their own: no load drops another shard's
            prefix += f"shard{index}of{count}-"
        stem = os.path.join(cache_dir, prefix + key[:20])
        cached = image_cache.read_cache(stem, key)
        if cached is not None:
            images, labels, meta = cached
            apply_bad_policy(root, domain, meta["bad"], on_bad)
            return Domain(domain, images, labels, class_names, tuple(meta["paths"]))

    images, failures = _decode_all(
        [os.path.join(root, relative) for relative in paths],
        resize=resize,
        crop=crop,
        workers=workers or default_workers(),
        progress=progress,
        description=f"decoding {domain}",
    )
    bad = [(paths[index], reason) for index, reason in failures]  # relative, like paths
    if failures:
        keep = np.ones(len(paths), dtype=bool)
        keep[[index for index, _ in failures]] = False
        images, labels = images[keep], labels[keep]
        paths = [path for path, kept in zip(paths, keep, strict=True) if kept]
    if use_cache:
        # Cached even with bad files, so switching to on_bad="skip" does not decode again.
        meta = {
            "key": key,
            "format_version": image_cache.CACHE_FORMAT_VERSION,
            "root": os.path.realpath(root),
            "domain": domain,
            "split": split,
            "resize": resize,
            "crop": crop,
            "class_names": list(class_names),
            "paths": paths,
            "bad": bad,
        }
        image_cache.write_cache(cache_dir, prefix, stem, images, labels, meta)
    apply_bad_policy(root, domain, bad, on_bad)
    return Domain(domain, images, labels, class_names, tuple(paths))


def load_domains(root: PathLike, domains: Sequence[str], **kwargs: Any) -> dict[str, Domain]:
    """Load several domains (``load_domain`` keywords), after checking their classes agree."""
    check_classes(root, domains)
    return {domain: load_domain(root, domain, **kwargs) for domain in domains}


def normalize(images: np.ndarray | jax.Array) -> jax.Array:
    """uint8 NHWC images -> float32 ImageNet-normalised, as ToTensor + Normalize; jit-friendly."""
    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}; pass Domain.images.")
    mean = jnp.asarray(IMAGENET_MEAN, dtype=jnp.float32)
    std = jnp.asarray(IMAGENET_STD, dtype=jnp.float32)
    return (jnp.asarray(images, dtype=jnp.float32) / 255.0 - mean) / std


# --------------------------------------------------------------------------- exploring


def explore(root: PathLike, domains: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per-class image counts of each domain and their total, min, max, mean and std.

    ``std`` is the population standard deviation (``np.std``) of the per-class counts;
    ``min_class`` and ``max_class`` name the (first) class reaching the extreme.
    """
    domains = tuple(domains) if domains is not None else DOMAINS
    class_names = check_classes(root, domains)
    stats = {}
    for domain in domains:
        _, labels, _ = list_domain(root, domain)
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


def plot_class_distribution(stats: dict[str, dict[str, Any]], path: PathLike) -> None:
    """Grouped bar chart of ``explore`` output: one group per class, one bar per domain."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    figure.savefig(os.fspath(path), dpi=120)


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxdann.data``: print the per-class counts table, optionally plot it."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.data", description="Per-class image counts of the PACS domains."
    )
    parser.add_argument(
        "--root",
        default=default_root(),
        help="PACS root (default: $JAXDANN_PACS_ROOT or %(default)s)",
    )
    parser.add_argument("--plot", help="write a grouped bar chart of the counts to this PNG file")
    parser.add_argument(
        "--domains", default=",".join(DOMAINS), help="comma-separated domains (default: all four)"
    )
    args = parser.parse_args(argv)
    domains = [domain.strip() for domain in args.domains.split(",") if domain.strip()]
    if not domains:
        parser.error("--domains is empty; give e.g. --domains art_painting,photo")
    try:
        stats = explore(args.root, domains)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"PACS images per class in {args.root}\n")
    print(format_stats(stats))
    if args.plot:
        plot_class_distribution(stats, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

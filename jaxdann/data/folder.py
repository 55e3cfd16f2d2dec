"""The generic image-folder reader: ``ROOT/<domain>/<class>/<image>`` -> uint8 arrays, cached.

Layout: one folder per domain under the root; in each, one folder per class holding the images
(``.jpg``, ``.jpeg``, ``.png``, any case). Class folders are sorted by name and label ``i`` is the
``i``-th; every domain of an experiment must have the same class folders. Hidden files and
operating-system clutter (``Thumbs.db``, ``desktop.ini``) are ignored; any other file that is not
an image in a class folder is an error, or a warning with ``on_bad="skip"``.

Data flows one way: ``list_domain`` (relative paths, int32 labels, class names) ->
``load_listed`` (select the shard's and the limit's files, then decode them in parallel threads
into uint8 ``[N, crop, crop, 3]`` and cache them as ``.npy`` with
:mod:`jaxdann.data.image_cache`). Undecodable images are all named in one DataError, or left out
with one warning when ``on_bad="skip"``. Long decodes report progress on stderr: a bar on a
terminal, otherwise a line every :data:`PROGRESS_INTERVAL` seconds.

Preprocessing matches torchvision's ``Resize(resize) + CenterCrop(crop)`` on PIL images, so a
model converted from torchvision sees the inputs it was trained on.

:class:`ImageFolder` is the :class:`~jaxdann.data.dataset.Dataset` over such a tree: a data set
laid out this way is a subclass naming its domains and root (see :class:`jaxdann.data.pacs.PACS`).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import struct
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxdann.data import decode, image_cache
from jaxdann.data.dataset import ALL, Dataset, Domain, select_rows
from jaxdann.errors import ConfigError, DataError

__all__ = [
    "DECODE_ERRORS",
    "IMAGE_EXTENSIONS",
    "ON_BAD",
    "PROGRESS_INTERVAL",
    "Domain",
    "ImageFolder",
    "apply_bad_policy",
    "check_classes",
    "check_on_bad",
    "default_cache_dir",
    "default_workers",
    "format_paths",
    "list_domain",
    "load_domain",
    "load_listed",
    "preprocess_image",
    "require_root",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared case-insensitively
ON_BAD = ("error", "skip")
# Seconds between progress lines on stderr when it is not a terminal (logs, batch jobs).
PROGRESS_INTERVAL = 5.0

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
_MAX_LISTED = 10
# Both command lines that read image folders (jaxdann.data, jaxdann.tfds_pacs) take --on-bad.
SKIP_HINT = "pass on_bad='skip' (config key data.on_bad=skip, or --on-bad skip) to leave them out"

PathLike = str | os.PathLike


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


def check_on_bad(on_bad: str) -> None:
    if on_bad not in ON_BAD:
        raise ConfigError(
            f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}; set data.on_bad to one."
        )


def _check_sizes(resize: int, crop: int) -> None:
    if crop > resize:
        raise ConfigError(f"crop ({crop}) must not exceed resize ({resize}); fix data.crop.")


def require_root(root: PathLike, hint: str = "") -> str:
    """``root`` as a string, after checking it is a folder; ``hint`` ends the error message."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(
            f"Data root {root!r} does not exist or is not a folder; "
            + (hint or "it should hold one folder per domain, laid out <domain>/<class>/<image>.")
        )
    return root


def _subfolders(folder: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(folder)
        if not _is_hidden(name) and os.path.isdir(os.path.join(folder, name))
    )


def _domain_dir(root: PathLike, domain: str) -> str:
    """The domain's folder (``domain`` may be a relative path, ``amazon/images``), after checking
    that the root and the folder exist."""
    root = require_root(root)
    domain_dir = os.path.join(root, domain)
    if not os.path.isdir(domain_dir):
        raise DataError(
            f"Domain folder {domain_dir!r} does not exist; domains found in {root!r}: "
            f"{', '.join(_subfolders(root)) or 'none'}, so fix the domain name or the root."
        )
    return domain_dir


def class_folders(root: PathLike, domain: str) -> tuple[str, ...]:
    """Sorted class folder names of one domain; their order defines the labels."""
    domain_dir = _domain_dir(root, domain)
    names = _subfolders(domain_dir)
    if not names:
        raise DataError(
            f"Domain folder {domain_dir!r} has no class folders; lay it out as "
            f"{os.path.join(domain_dir, '<class>', '<image>')}."
        )
    return tuple(names)


def list_domain(
    root: PathLike, domain: str, *, on_bad: str = "error"
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Image paths (relative to ``root``, ``<domain>/<class>/<image>``), int32 labels and class
    names of one domain, in sorted class then file name order; labels index the class names.

    ``domain`` is the domain's folder relative to the root: a name, or a path such as
    ``amazon/images`` (Office-31), which then begins every path."""
    check_on_bad(on_bad)
    root = os.fspath(root)
    class_names = class_folders(root, domain)
    domain_dir = os.path.join(root, domain)
    paths, labels = [], []
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
            raise DataError(f"{message}; remove them, or {SKIP_HINT}.")
        warnings.warn(f"{message}; ignoring them (on_bad='skip').", stacklevel=2)
    return paths, np.asarray(labels, dtype=np.int32), class_names


def check_classes(root: PathLike, domains: Sequence[str]) -> tuple[str, ...]:
    """The class names shared by all ``domains``; a DataError says which domain lacks which."""
    if not domains:
        raise ValueError("check_classes needs at least one domain.")
    per_domain = {domain: class_folders(root, domain) for domain in domains}
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


def preprocess_image(
    path: PathLike, *, resize: int = 256, crop: int = 224, resize_mode: str = "shorter"
) -> np.ndarray:
    """Decode one image as torchvision's ``Resize(resize) + CenterCrop(crop)`` would: uint8 HWC.

    Any PIL mode (grey, palette, RGBA, CMYK, ...) becomes RGB; the shorter side becomes
    ``resize`` with PIL bilinear (antialiased) resampling; the centre crop rounds like torchvision.
    ``resize_mode="square"`` resizes to ``resize`` x ``resize`` instead, as TLlib's
    ``ResizeImage`` (:func:`jaxdann.data.decode.resize_square`). Raises PIL's errors for
    unreadable or truncated files.
    """
    _check_sizes(resize, crop)
    image = decode.resize(decode.open_rgb(path), resize, resize_mode)
    return np.asarray(decode.center_crop(image, crop), dtype=np.uint8)


def _decode_into(
    output: np.ndarray, paths: Sequence[str], sizes: tuple[int, int, str]
) -> list[tuple[int, str]]:
    """Decode ``paths`` into the rows of ``output``; failures come back as (index, reason)."""
    resize, crop, resize_mode = sizes
    failures = []
    for index, path in enumerate(paths):
        try:
            output[index] = preprocess_image(
                path, resize=resize, crop=crop, resize_mode=resize_mode
            )
        except DECODE_ERRORS as error:
            failures.append((index, f"{type(error).__name__}: {error}"))
    return failures


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class _Progress:
    """Progress of a long decode on stderr: a bar on a terminal; elsewhere (logs, batch jobs) a
    line every :data:`PROGRESS_INTERVAL` seconds and a last one when any was written."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.total, self.description, self.done, self.lines = total, description, 0, 0
        enabled = enabled and total > 0
        terminal = sys.stderr.isatty()
        bar = enabled and terminal
        self.bar = tqdm(total=total, desc=description, unit="img", disable=not bar)
        self.log = enabled and not terminal
        self.start = self.last = time.monotonic()

    def update(self, count: int) -> None:
        self.bar.update(count)
        self.done += count
        now = time.monotonic()
        if self.log and now - self.last >= PROGRESS_INTERVAL and self.done < self.total:
            self.last = now
            self.lines += 1
            percent = 100 * self.done // self.total
            print(
                f"{self.description}: {self.done}/{self.total} images ({percent}%), "
                f"{now - self.start:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()
        if self.lines:
            elapsed = time.monotonic() - self.start
            print(
                f"{self.description}: {self.done} images in {elapsed:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def _decode_all(
    paths: Sequence[str],
    *,
    sizes: tuple[int, int, str],
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
    crop = sizes[1]
    images = np.zeros((count, crop, crop, 3), dtype=np.uint8)
    chunk = min(64, max(8, math.ceil(count / (4 * workers))))
    failures: list[tuple[int, str]] = []
    reporter = _Progress(count, description, progress)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
            futures = {
                executor.submit(
                    _decode_into,
                    images[start : start + chunk],
                    paths[start : start + chunk],
                    sizes,
                ): start
                for start in range(0, count, chunk)
            }
            for future in concurrent.futures.as_completed(futures):
                start = futures[future]
                failures.extend((start + index, reason) for index, reason in future.result())
                reporter.update(min(chunk, count - start))
    finally:
        reporter.close()
    return images, sorted(failures)


# --------------------------------------------------------------------------- loading


def apply_bad_policy(root: str, domain: str, bad: Sequence[Sequence[str]], on_bad: str) -> None:
    """Raise for undecodable images (listing every one), or warn when skipping them."""
    if not bad:
        return
    listing = "; ".join(f"{os.path.join(root, path)} ({reason})" for path, reason in bad)
    message = f"{len(bad)} images in {os.path.join(root, domain)!r} could not be decoded: {listing}"
    if on_bad == "error":
        raise DataError(f"{message}; replace or remove them, or {SKIP_HINT}.")
    warnings.warn(f"{message}; skipping them (on_bad='skip').", stacklevel=3)


def _cache_stem(cache_dir, root, domain, split, sizes, listing, shard, limited):
    """(cache folder, entry prefix, entry stem, key) of one load's cache entry.

    Shards and limited loads have entries of their own: none drops another's when it is written.
    One limited entry is kept per domain, split, sizes and shard (a new limit replaces it).
    """
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    key = image_cache.cache_key(root, domain, split, *sizes, *listing)
    prefix = image_cache.cache_prefix(domain, split, *sizes)
    if shard[1] > 1:
        prefix += f"shard{shard[0]}of{shard[1]}-"
    if limited:
        prefix += "limited-"
    return cache_dir, prefix, os.path.join(cache_dir, prefix + key[:20]), key


def load_listed(
    root: PathLike,
    domain: str,
    paths: Sequence[str],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    *,
    split: str | None = None,
    resize: int = 256,
    crop: int = 224,
    resize_mode: str = "shorter",
    cache_dir: PathLike | Literal[False] | None = None,
    on_bad: str = "error",
    workers: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    limit: int = 0,
) -> Domain:
    """Decode the listed images of one domain (``paths`` relative to ``root``), once: later
    calls read the ``.npy`` cache.

    Only the files :func:`~jaxdann.data.dataset.select_rows` ``(len(paths), shard, limit)``
    keeps are decoded: ``shard=(index, count)`` every ``count``-th file from ``index``, so each
    host of a multi-host run decodes only its share; ``limit > 0`` then a fixed random subset of
    ``ceil(limit / count)`` files. ``split`` names the listing in the cache (None: the whole
    domain). The cache (``cache_dir``, default ``default_cache_dir()``; ``False`` disables it)
    is keyed by the domain, split, sizes (``resize``, ``crop``, ``resize_mode``: see
    :func:`preprocess_image`) and every kept file's path, size and mtime, so editing,
    adding or removing an image decodes again. Undecodable images are all reported in one
    DataError, or left out with a warning when ``on_bad="skip"`` (a limited load then has fewer
    than its limit). ``workers`` defaults to all cores.
    """
    check_on_bad(on_bad)
    _check_sizes(resize, crop)
    sizes = (resize, crop, resize_mode)
    root = os.fspath(root)
    rows = select_rows(len(paths), shard, limit)
    limited = len(rows) < len(range(shard[0], len(paths), shard[1]))
    paths, labels = [paths[row] for row in rows], np.asarray(labels, np.int32)[rows]

    if cache_dir is not False:
        listing = (paths, labels, class_names)
        cache_dir, prefix, stem, key = _cache_stem(
            cache_dir, root, domain, split, sizes, listing, shard, limited
        )
        cached = image_cache.read_cache(stem, key)
        if cached is not None:
            images, labels, meta = cached
            apply_bad_policy(root, domain, meta["bad"], on_bad)
            return Domain(domain, images, labels, class_names, tuple(meta["paths"]))

    images, failures = _decode_all(
        [os.path.join(root, relative) for relative in paths],
        sizes=sizes,
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
    if cache_dir is not False:
        # Cached even with bad files, so switching to on_bad="skip" does not decode again.
        meta = {
            "key": key,
            "format_version": image_cache.CACHE_FORMAT_VERSION,
            "root": os.path.realpath(root),
            **{"domain": domain, "split": split, "resize": resize, "crop": crop},
            "resize_mode": resize_mode,
            **{"class_names": list(class_names), "paths": paths, "bad": bad},
        }
        image_cache.write_cache(cache_dir, prefix, stem, images, labels, meta)
    apply_bad_policy(root, domain, bad, on_bad)
    return Domain(domain, images, labels, class_names, tuple(paths))


def load_domain(root: PathLike, domain: str, *, on_bad: str = "error", **kwargs) -> Domain:
    """Every image of ``ROOT/<domain>/<class>/<image>``: :func:`list_domain`, then
    :func:`load_listed` (its keywords: sizes, cache, workers, progress, shard, limit)."""
    paths, labels, class_names = list_domain(root, domain, on_bad=on_bad)
    return load_listed(root, domain, paths, labels, class_names, on_bad=on_bad, **kwargs)


# --------------------------------------------------------------------------- the dataset


class ImageFolder(Dataset):
    """A :class:`~jaxdann.data.dataset.Dataset` laid out as ``ROOT/<domain>/<class>/<image>``.

    Subclasses set ``name``, ``domains``, ``root_variable`` (the environment variable naming the
    root) and ``root_default``; the root is ``data.root``, else the variable, else the default.
    A domain's class folders lie in :meth:`domain_folder` (``layout`` describes it in errors:
    Office-31 keeps them in ``<domain>/images/``). The one split is ``all`` (every image of the
    domain); a subclass with official image lists adds their names to ``splits`` and reads them
    in :meth:`list_split`.
    """

    title: str = ""  # the data set's usual name, in messages ("" = ``name``)
    layout: str = "<domain>/<class>/<image>"  # below the root, for error messages
    root_variable: str = ""
    root_default: str = ""

    def default_root(self) -> str:
        """``$<root_variable>`` if set, else ``root_default`` (which may not exist)."""
        return (os.environ.get(self.root_variable) if self.root_variable else "") or (
            self.root_default
        )

    def root(self, data) -> str:
        """The root ``data.root`` names, or :meth:`default_root` when it is empty."""
        return data.root or self.default_root()

    def domain_folder(self, root: str, domain: str) -> str:
        """The folder holding ``domain``'s class folders, relative to the root."""
        return domain

    def require_root(self, root: PathLike) -> str:
        """``root`` as a string; a DataError naming the expected layout when it is no folder."""
        variable = f" or set ${self.root_variable}" if self.root_variable else ""
        return require_root(
            root,
            f"the {self.title or self.name} layout is {self.describe_layout()}, so pass "
            f"--config.data.root (--root to python -m jaxdann.data){variable} to such a folder.",
        )

    def describe_layout(self) -> str:
        """``ROOT/<layout>`` and the domains, for messages."""
        folders = ", ".join(f"{domain}/" for domain in self.domains)
        domains = f" (domain folders {folders})" if self.domains else ""
        return f"ROOT/{self.layout}{domains}"

    def check_layout(self, root: str, domain: str) -> str:
        """The domain's folder relative to the root; a DataError in one sentence, naming the
        expected layout and what the root holds, when it is not there."""
        relative = self.domain_folder(root, domain)
        if not os.path.isdir(os.path.join(root, relative)):
            found = ", ".join(_subfolders(root)) or "no folders"
            raise DataError(
                f"{os.path.join(root, relative)!r} is not a folder: the "
                f"{self.title or self.name} layout is {self.describe_layout()}, and {root!r} "
                f"holds {found}; fix data.root or the domain name."
            )
        return relative

    def present_domains(self, data) -> tuple[str, ...]:
        root = self.require_root(self.root(data))
        return tuple(
            domain
            for domain in self.domain_names(data)
            if os.path.isdir(os.path.join(root, self.domain_folder(root, domain)))
        )

    def class_names(self, data, domains: Sequence[str] | None = None) -> tuple[str, ...]:
        root = self.require_root(self.root(data))
        domains = tuple(domains) if domains else self.domain_names(data)
        folders = [self.check_layout(root, domain) for domain in domains]
        return check_classes(root, folders)

    def listing(self, domain: str, split: str, data) -> tuple[str, tuple[str, ...], np.ndarray]:
        self.check_domain(domain, data=data)
        root = self.require_root(self.root(data))
        paths, labels, _ = self.list_split(root, domain, split, data.on_bad)
        return root, tuple(paths), labels

    def list_split(
        self, root: str, domain: str, split: str, on_bad: str
    ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
        """Relative paths, int32 labels and class names of ``domain``'s ``split``."""
        self.check_split(split)
        return list_domain(root, self.check_layout(root, domain), on_bad=on_bad)

    def load(
        self,
        domain: str,
        split: str,
        data,
        *,
        shard: tuple[int, int] = (0, 1),
        limit: int = 0,
        progress: bool = True,
    ) -> Domain:
        self.check_domain(domain, data=data)
        self.check_split(split)
        root = self.require_root(self.root(data))
        paths, labels, class_names = self.list_split(root, domain, split, data.on_bad)
        return load_listed(
            root,
            domain,
            paths,
            labels,
            class_names,
            split=None if split == ALL else split,
            resize=data.resize,
            crop=data.crop,
            resize_mode=data.resize_mode,
            cache_dir=data.cache_dir or None,
            on_bad=data.on_bad,
            progress=progress,
            shard=shard,
            limit=limit,
        )


class Folder(ImageFolder):
    """``data.name=folder``: any ``ROOT/<domain>/<class>/<image>`` tree; its domains are the
    root's folders (``data.root`` must name it)."""

    name = "folder"
    title = "folder dataset"

    def domain_names(self, data=None) -> tuple[str, ...]:
        if data is None:
            return self.domains
        if not data.root:
            raise ConfigError(
                "the folder dataset reads the folder data.root names, and it is empty; pass "
                "--config.data.root=DIR (--root DIR to python -m jaxdann.data), laid out "
                "DIR/<domain>/<class>/<image>."
            )
        domains = tuple(_subfolders(self.require_root(data.root)))
        if not domains:
            raise DataError(
                f"{data.root!r} holds no domain folders; give data.root (--root to python -m "
                "jaxdann.data) a folder laid out DIR/<domain>/<class>/<image>."
            )
        return domains

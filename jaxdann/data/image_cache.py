"""The decoded-image cache: uint8 arrays as ``.npy`` files keyed by what they depend on.

An entry is ``<domain>-<split>-<resize>[square]-<crop>-[shard<i>of<n>-][limited-]<hash>.{images.npy,
labels.npy,json}`` (split ``all`` for a whole domain; ``square`` for ``data.resize_mode=square``;
``limited-`` for a ``data.limit`` subset;
the hash shortened to 20 characters in the name, whole in the JSON); the hash covers every
file's path, size and mtime, so any change to the images decodes again. Writing an entry drops
the older ones with the same prefix and root. Files are written to a temporary name and
renamed, the JSON last: a half-written entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CACHE_FORMAT_VERSION",
    "atomic_write",
    "cache_key",
    "cache_prefix",
    "read_cache",
    "write_cache",
]

CACHE_FORMAT_VERSION = 1


def cache_key(
    root: str,
    domain: str,
    split: str | None,
    resize: int,
    crop: int,
    resize_mode: str,
    paths: Sequence[str],
    labels: np.ndarray,
    class_names: tuple[str, ...],
) -> str:
    """Hash of everything the decoded arrays depend on, file sizes and mtimes included."""
    files = []
    for relative in paths:
        stat = os.stat(os.path.join(root, relative))
        files.append([relative, stat.st_size, stat.st_mtime_ns])
    description = {
        "version": CACHE_FORMAT_VERSION,
        "domain": domain,
        "split": split,
        "resize": resize,
        "crop": crop,
        "class_names": list(class_names),
        "files": files,
        "labels": labels.tolist(),
    }
    if (
        resize_mode != "shorter"
    ):  # the default mode leaves the keys of existing entries as they were
        description["resize_mode"] = resize_mode
    return hashlib.sha256(json.dumps(description).encode()).hexdigest()


def cache_prefix(domain: str, split: str | None, resize: int, crop: int, resize_mode: str) -> str:
    mode = "" if resize_mode == "shorter" else resize_mode
    return f"{domain}-{split or 'all'}-{resize}{mode}-{crop}-"


def atomic_write(path: str, write: Any) -> None:
    """Write through ``write(handle)`` to a temporary file, then rename it over ``path``."""
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_cache(stem: str, key: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """The cached arrays and metadata for ``key``, or None when absent or unusable."""
    meta_path = f"{stem}.json"
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("key") != key:
            return None
        images = np.load(f"{stem}.images.npy")
        labels = np.load(f"{stem}.labels.npy")
    except (OSError, ValueError) as error:
        warnings.warn(
            f"Ignoring unreadable cache {stem!r} ({error}); decoding again.", stacklevel=3
        )
        return None
    count = len(meta["paths"])
    if images.shape[0] != count or labels.shape != (count,) or images.dtype != np.uint8:
        warnings.warn(f"Ignoring inconsistent cache {stem!r}; decoding again.", stacklevel=3)
        return None
    return images, labels, meta


def write_cache(
    cache_dir: str, prefix: str, stem: str, images: np.ndarray, labels: np.ndarray, meta: dict
) -> None:
    """Write one cache entry (JSON last, it marks the entry complete) and drop stale ones."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write(f"{stem}.images.npy", lambda handle: np.save(handle, images))
        atomic_write(f"{stem}.labels.npy", lambda handle: np.save(handle, labels))
        atomic_write(f"{stem}.json", lambda handle: handle.write(json.dumps(meta).encode()))
    except OSError as error:
        warnings.warn(
            f"Could not write the data cache {stem!r} ({error}); continuing without it, so set "
            "$JAXDANN_CACHE_DIR to a writable folder to decode only once.",
            stacklevel=3,
        )
        return
    # Entries for the same root, domain, split and sizes but older file contents are stale.
    for name in os.listdir(cache_dir):
        old_stem = os.path.join(cache_dir, name[: -len(".json")])
        # Exactly prefix + key: a longer prefix (a shard's) names another kind of entry.
        key_part = name[len(prefix) : -len(".json")]
        if not (name.startswith(prefix) and name.endswith(".json")) or old_stem == stem:
            continue
        if not re.fullmatch(r"[0-9a-f]+", key_part):
            continue
        try:
            with open(os.path.join(cache_dir, name), encoding="utf-8") as handle:
                if json.load(handle).get("root") != meta["root"]:
                    continue
            for suffix in (".json", ".images.npy", ".labels.npy"):
                if os.path.exists(old_stem + suffix):
                    os.remove(old_stem + suffix)
        except (OSError, ValueError):
            continue

"""PACS (Photo, Art painting, Cartoon, Sketch; Li et al. 2017): four domains, seven classes.

A :class:`~jaxdann.data.folder.ImageFolder` (``ROOT/<domain>/<class>/<image>``, read by
:mod:`jaxdann.data.folder`) with PACS's domain names, its root (``$JAXDANN_PACS_ROOT`` or
``../shared/data/PACS``), and its official split lists: ``<domain>_<split>_kfold.txt`` for the
splits ``train``, ``crossval`` and ``test``, in the root or ``ROOT/splits/``. Training reads the
split ``all`` (every image of a domain), as the seed did; with ``data.validation=source_holdout``
each source trains on its ``train`` list and the run validates on their ``crossval`` lists (Li et
al.'s source validation; the target is still read whole). With ``data.format=tfds`` the domains
are read from the TFDS ``pacs`` dataset instead (:mod:`jaxdann.tfds_pacs`).

The module functions (``list_domain``, ``load_domain``, ``load_domains``, ``check_classes``) take
a root and any domain names, for PACS-like trees; their errors name the PACS layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdann.data.dataset import ALL, IMAGENET_MEAN, IMAGENET_STD, Domain
from jaxdann.data.folder import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    ON_BAD,
    ImageFolder,
    PathLike,
    apply_bad_policy,
    check_on_bad,
    class_folders,
    default_cache_dir,
    default_workers,
    format_paths,
    load_listed,
    preprocess_image,
)
from jaxdann.data.folder import check_classes as _check_classes
from jaxdann.data.folder import list_domain as _list_folder
from jaxdann.data.image_list import read_image_list
from jaxdann.errors import ConfigError, DataError

__all__ = [
    "DECODE_ERRORS",
    "DOMAINS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ON_BAD",
    "PACS",
    "SPLITS",
    "Domain",
    "apply_bad_policy",
    "check_classes",
    "default_cache_dir",
    "default_root",
    "default_workers",
    "format_paths",
    "list_domain",
    "load_domain",
    "load_domains",
    "normalize",
    "preprocess_image",
]

DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
SPLITS = ("train", "crossval", "test")  # the official split lists


def _split_file(root: str, domain: str, split: str) -> str:
    name = f"{domain}_{split}_kfold.txt"
    candidates = [os.path.join(root, name), os.path.join(root, "splits", name)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DataError(
        f"Split file for domain {domain!r}, split {split!r} not found (looked at "
        f"{' and '.join(repr(c) for c in candidates)}); put the official PACS split lists there, "
        "or validate on held-out domains instead of data.validation=source_holdout "
        "(e.g. --config.data.validation=cartoon,sketch, or none; split=None in Python)."
    )


def _read_split(
    root: str, domain: str, split: str, class_names: tuple[str, ...]
) -> tuple[list[str], list[int]]:
    """Paths and labels from an official PACS ``<domain>_<split>_kfold.txt`` list."""
    split_path = _split_file(root, domain, split)
    return read_image_list(split_path, root, class_names, base=1, kind="split file")


class PACS(ImageFolder):
    """PACS: the image-folder reader, its four domains, and its official split lists."""

    name = "pacs"
    title = "PACS"
    domains = DOMAINS
    splits = (ALL, *SPLITS)
    holdout = ("train", "crossval")
    root_variable = "JAXDANN_PACS_ROOT"
    root_default = os.path.join("..", "shared", "data", "PACS")

    def list_split(
        self, root: str, domain: str, split: str, on_bad: str
    ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
        self.check_split(split)
        if split == ALL:
            return _list_folder(root, domain, on_bad=on_bad)
        check_on_bad(on_bad)
        class_names = class_folders(root, domain)
        paths, labels = _read_split(root, domain, split, class_names)
        return paths, np.asarray(labels, dtype=np.int32), class_names

    def listed_splits(self, data, domain: str) -> tuple[str, ...]:
        """``all``, and the official lists found in the root."""
        root = self.root(data)
        names = [f"{domain}_{split}_kfold.txt" for split in SPLITS]
        found = [
            split
            for split, name in zip(SPLITS, names, strict=True)
            if any(os.path.isfile(os.path.join(root, f, name)) for f in ("", "splits"))
        ]
        return (ALL, *found)

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
        if data.format != "tfds":
            return super().load(domain, split, data, shard=shard, limit=limit, progress=progress)
        self.check_domain(domain, data=data)
        if split != ALL:
            raise ConfigError(
                f"data.format=tfds reads whole domains (split {ALL!r}), not split {split!r}; use "
                "data.format=folder for the official split lists."
            )
        from jaxdann.tfds_pacs import load_domains_tfds

        root = self.require_root(self.root(data))
        loaded = load_domains_tfds(
            root,
            [domain],
            resize=data.resize,
            crop=data.crop,
            on_bad=data.on_bad,
            shard=shard,
            limit=limit,
        )
        return loaded[domain]


_PACS = PACS()


def default_root() -> str:
    """PACS root: ``$JAXDANN_PACS_ROOT`` if set, else ``../shared/data/PACS`` (may not exist)."""
    return _PACS.default_root()


def list_domain(
    root: PathLike,
    domain: str,
    *,
    split: str | None = None,
    on_bad: str = "error",
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Image paths (relative to ``root``), int32 labels and class names of one domain.

    Walks ``ROOT/<domain>/<class>/<image>`` (:func:`jaxdann.data.folder.list_domain`); labels
    index the sorted class names. With ``split`` ("train", "crossval" or "test") the images come
    from the official PACS list ``ROOT/<domain>_<split>_kfold.txt`` (or ``ROOT/splits/...``)
    instead. Hidden files are ignored; other non-image files are an error, or a warning with
    ``on_bad="skip"``.
    """
    return _PACS.list_split(_PACS.require_root(root), domain, split or ALL, on_bad)


def check_classes(root: PathLike, domains: Sequence[str]) -> tuple[str, ...]:
    """The class names shared by all ``domains``; a DataError says which domain lacks which."""
    return _check_classes(_PACS.require_root(root), domains)


def load_domain(
    root: PathLike,
    domain: str,
    *,
    split: str | None = None,
    on_bad: str = "error",
    **kwargs: Any,
) -> Domain:
    """Decode one domain (or one official split of it) into uint8 arrays, once: later calls read
    the ``.npy`` cache. Keywords: :func:`jaxdann.data.folder.load_listed`'s (``resize``,
    ``crop``, ``cache_dir``, ``workers``, ``progress``, ``shard``, ``limit``)."""
    paths, labels, class_names = list_domain(root, domain, split=split, on_bad=on_bad)
    return load_listed(
        root, domain, paths, labels, class_names, split=split, on_bad=on_bad, **kwargs
    )


def load_domains(root: PathLike, domains: Sequence[str], **kwargs: Any) -> dict[str, Domain]:
    """Load several domains (``load_domain`` keywords), after checking their classes agree."""
    check_classes(root, domains)
    return {domain: load_domain(root, domain, **kwargs) for domain in domains}


def normalize(images):
    """uint8 NHWC images -> float32 ImageNet-normalised, as ToTensor + Normalize; jit-friendly."""
    import jax.numpy as jnp  # here: listing and decoding need no JAX

    if images.dtype != jnp.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}; pass Domain.images.")
    mean = jnp.asarray(IMAGENET_MEAN, dtype=jnp.float32)
    std = jnp.asarray(IMAGENET_STD, dtype=jnp.float32)
    return (jnp.asarray(images, dtype=jnp.float32) / 255.0 - mean) / std

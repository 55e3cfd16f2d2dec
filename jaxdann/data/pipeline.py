"""From a config to host arrays, and the deterministic order in which training reads them.

Every index a run reads is a pure function of (seed, epoch, step): the source set is traversed
once per epoch in a fresh order; the target set cycles independently with its own orders. A
resumed run therefore reads exactly what an unbroken one would have.

Multi-host runs with ``data.shard_per_host`` load one shard per process (every P-th image) and
each process draws its part of every batch from its own shard, as endless streams keyed by
(seed, process, step) -- the same guarantee, for a fixed number of processes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib

import numpy as np

from jaxdann import config as config_lib
from jaxdann.data import DATASETS
from jaxdann.data.dataset import Domain, select_rows
from jaxdann.errors import DataError

__all__ = [
    "Split",
    "ExperimentData",
    "FileSplit",
    "describe_fingerprint",
    "load_domains",
    "load_experiment_data",
    "steps_per_epoch",
    "source_batch",
    "source_batch_indices",
    "target_batch_indices",
    "shard_stream_indices",
]

_SOURCE_STREAM, _TARGET_STREAM = 1, 2  # data.limit's subset has stream 3 (dataset.select_rows)
FINGERPRINT_SPLITS = ("source", "target", "target_eval", "validation")


@dataclasses.dataclass(frozen=True)
class Split:
    """uint8 NHWC images (resized and cropped, not normalised) and int32 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def crc32(self) -> int:
        """CRC-32 of the images and labels: equal for the same data, however it was read."""
        crc = zlib.crc32(np.ascontiguousarray(self.images))
        return zlib.crc32(self.labels.astype(np.int32), crc)


@dataclasses.dataclass(frozen=True, eq=False)
class FileSplit:
    """Image files (``data.streaming``): paths relative to ``root`` (UTF-8 bytes, compact for
    millions of rows) and int32 labels; decoded batch by batch (:mod:`jaxdann.data.streaming`)
    into ``image_shape`` uint8 images."""

    root: str
    paths: np.ndarray  # bytes [N]
    labels: np.ndarray  # int32 [N]
    image_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, row: int) -> str:
        return os.path.join(self.root, self.paths[row].decode())

    def crc32(self) -> int:
        """CRC-32 of the paths, each file's size and the labels: a changed, added or removed
        file changes it (image bytes are not read: the data may be larger than memory)."""
        sizes = np.asarray([os.path.getsize(self.path(row)) for row in range(len(self))])
        crc = zlib.crc32(b"\0".join(self.paths.tolist()))
        crc = zlib.crc32(sizes.astype(np.int64), crc)
        return zlib.crc32(self.labels.astype(np.int32), crc)


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    source: Split | FileSplit  # labelled training domain
    target: Split | FileSplit  # unlabelled training domain: the train step never sees its labels
    target_eval: Split | FileSplit  # where target accuracy is measured
    validation: Split | FileSplit | None  # neither source-train nor target: for model selection
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def streaming(self) -> bool:
        """Files decoded batch by batch, not arrays in memory."""
        return isinstance(self.source, FileSplit)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One image's shape as the train step sees it (uint8 HWC)."""
        return self.source.image_shape

    @functools.cached_property
    def fingerprint(self) -> np.ndarray:
        """What a run trains and is measured on, in a few numbers (int64, two per split of
        :data:`FINGERPRINT_SPLITS`): each split's image count and the CRC-32 of its images and
        labels, -1s for an absent split. Computed once per object (a sweep's runs share one).

        Equal fingerprints mean the same data (short of a CRC-32 collision), wherever and however
        it was read (any ``data.root``, folder or TFDS): the run folder records it, and a resumed
        run must read the same.
        """
        values, seen = [], {}
        for name in FINGERPRINT_SPLITS:
            split = getattr(self, name)
            if split is None:
                values += [-1, -1]
            elif id(split) in seen:  # PACS measures target accuracy on the target split itself
                values += seen[id(split)]
            else:
                seen[id(split)] = [len(split), split.crc32()]
                values += seen[id(split)]
        return np.asarray(values, np.int64)


def describe_fingerprint(values: np.ndarray) -> dict:
    """:attr:`ExperimentData.fingerprint`'s numbers by split, as ``data.json`` holds them."""
    pairs = np.asarray(values).reshape(len(FINGERPRINT_SPLITS), 2).tolist()
    return {
        name: None if count < 0 else {"images": count, "crc32": f"{crc:08x}"}
        for name, (count, crc) in zip(FINGERPRINT_SPLITS, pairs, strict=True)
    }


def _concat(splits: list):
    if len(splits) == 1:  # the part itself: PACS's target may be its target_eval too
        return splits[0]
    if isinstance(splits[0], FileSplit):
        if len({split.root for split in splits}) != 1:
            raise ValueError("a dataset's listings must share one root")
        paths = np.concatenate([s.paths for s in splits])
        labels = np.concatenate([s.labels for s in splits])
        return FileSplit(splits[0].root, paths, labels, splits[0].image_shape)
    return Split(
        np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits])
    )


def load_experiment_data(
    config, domains: dict | None = None, shard: tuple[int, int] = (0, 1)
) -> ExperimentData:
    """Loads the source, target and validation data a config names.

    The dataset ``data.name`` chooses (:data:`jaxdann.data.DATASETS`) checks the domain names
    (a ConfigError names the key and the dataset's domains) and says which (domain, split) parts
    the experiment reads (:meth:`~jaxdann.data.dataset.Dataset.plan`); each part is read once.
    Several source domains (``data.source=photo,cartoon``) are one labelled union, in order.

    ``domains``: parts :func:`load_domains` already read for a config with the same ``data``
    settings, by (domain, split), so that a study over many runs decodes (or reads from the
    cache) each part once. They are used for an unsharded load (``shard=(0, 1)``).

    ``shard=(index, count)``: this process's share of every split, every ``count``-th image from
    ``index`` (only its share is decoded); ``data.limit`` then applies per shard
    (``ceil(limit / count)`` each), and selects its images before any is decoded.
    """
    data = config.data
    dataset = DATASETS.get(data.name)
    dataset.check_settings(data)
    plan = dataset.plan(data)
    parts = list(dict.fromkeys([*plan.source, plan.target, plan.target_eval, *plan.validation]))
    class_names = dataset.class_names(data, list(dict.fromkeys(part[0] for part in parts)))
    splits = {}
    for part in parts:
        if data.streaming:
            splits[part] = _file_split(dataset, part, data, shard)
            continue
        loaded = _preloaded(domains, part, data, shard)
        if loaded is None:
            loaded = dataset.load(*part, data, shard=shard, limit=data.limit)
        if tuple(loaded.class_names) != tuple(class_names):
            raise DataError(
                f"{part[0]} ({part[1]}) has the classes {', '.join(loaded.class_names)}, the other "
                f"domains {', '.join(class_names)}; give every domain the same classes."
            )
        splits[part] = Split(loaded.images, loaded.labels)
    validation = [splits[part] for part in plan.validation]
    return ExperimentData(
        source=_concat([splits[part] for part in plan.source]),
        target=splits[plan.target],
        target_eval=splits[plan.target_eval],
        validation=_concat(validation) if validation else None,
        class_names=tuple(class_names),
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
    )


def _file_split(dataset, part: tuple[str, str], data, shard: tuple[int, int]) -> FileSplit:
    """The files of one part (``data.streaming``), selected as a load would select them; a
    ConfigError for a dataset that holds no image files."""
    root, paths, labels = dataset.listing(*part, data)
    if not paths:
        raise config_lib.ConfigError(
            f"config key data.streaming=true reads image files, and the {dataset.name} dataset "
            f"keeps its images in memory ({part[0]}); set data.streaming=false."
        )
    rows = select_rows(len(paths), shard, data.limit)
    encoded = np.asarray([paths[row].encode() for row in rows], dtype=bytes)
    shape = (int(data.crop), int(data.crop), 3)
    return FileSplit(root, encoded, np.asarray(labels, np.int32)[rows], shape)


def _preloaded(domains: dict | None, part: tuple[str, str], data, shard: tuple[int, int]):
    """The part from ``domains`` (unsharded), limited as ``data.limit`` says."""
    if domains is None or part not in domains or shard != (0, 1):
        return None
    whole = domains[part]
    rows = select_rows(len(whole), (0, 1), data.limit)
    if len(rows) == len(whole):
        return whole
    paths = tuple(whole.paths[row] for row in rows) if whole.paths else ()
    return Domain(whole.name, whole.images[rows], whole.labels[rows], whole.class_names, paths)


def load_domains(config, names, shard: tuple[int, int] = (0, 1)) -> dict:
    """The parts of the named domains a study over them reads
    (:meth:`~jaxdann.data.dataset.Dataset.study_parts`: whole domains, or train and test
    splits), by (domain, split), read the way ``config.data`` says (``data.limit`` included),
    for :func:`load_experiment_data`'s ``domains``. An unknown name is a ConfigError listing the
    dataset's domains. Streamed data (``data.streaming``) is listed per run: nothing is read
    here."""
    data = config.data
    dataset = DATASETS.get(data.name)
    for name in names:
        dataset.check_domain(name, data=data)
    dataset.class_names(data, list(names))  # clear errors for classes that differ, first
    if data.streaming:
        return {}
    return {
        part: dataset.load(*part, data, shard=shard, limit=data.limit)
        for part in dataset.study_parts(data, list(names))
    }


def steps_per_epoch(num_source: int, batch_size: int, drop_last: bool) -> int:
    steps = num_source // batch_size if drop_last else -(-num_source // batch_size)
    if steps == 0:
        raise config_lib.ConfigError(
            f"the source set has {num_source} images, fewer than one batch of {batch_size} with "
            "data.drop_last=true; lower batch_size."
        )
    return steps


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def source_batch_indices(
    num_source: int, batch_size: int, seed: int, epoch: int, drop_last: bool, multiple: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch's source batches as (indices, mask): a fresh permutation, cut into batches.

    The last batch may be short: it is padded (mask 0) to the full batch size rounded up to a
    multiple of ``multiple`` (the device count), so every step has one static shape.
    """
    order = _epoch_order(num_source, seed, epoch)
    steps = steps_per_epoch(num_source, batch_size, drop_last)
    return [_cut(order, step, batch_size, multiple) for step in range(steps)]


def source_batch(
    num_source: int, batch_size: int, seed: int, epoch: int, step: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``step`` of :func:`source_batch_indices` alone (a streamed step decodes only its
    own rows)."""
    return _cut(_epoch_order(num_source, seed, epoch), step, batch_size, multiple)


def _epoch_order(num_source: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, _SOURCE_STREAM, epoch]).permutation(num_source)


def _cut(
    order: np.ndarray, step: int, batch_size: int, multiple: int
) -> tuple[np.ndarray, np.ndarray]:
    indices = order[step * batch_size : (step + 1) * batch_size]
    padded_size = round_up(batch_size, multiple)
    mask = np.zeros(padded_size, np.float32)
    mask[: len(indices)] = 1.0
    padded = np.zeros(padded_size, np.int32)
    padded[: len(indices)] = indices
    return padded, mask


def _stream(
    count: int, start: int, size: int, key: list[int], padded_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions [start, start + size) of an endless stream of permutations of ``count`` rows
    (one per pass, seeded by ``key + [pass]``), padded to ``padded_size`` (mask 0)."""
    positions = np.arange(start, start + size)
    cycles = positions // count
    indices = np.empty(size, np.int64)
    for cycle in np.unique(cycles):
        order = np.random.default_rng([*key, int(cycle)]).permutation(count)
        selected = cycles == cycle
        indices[selected] = order[positions[selected] % count]
    mask = np.zeros(padded_size, np.float32)
    mask[:size] = 1.0
    padded = np.zeros(padded_size, np.int32)
    padded[:size] = indices
    return padded, mask


def target_batch_indices(
    num_target: int, batch_size: int, seed: int, global_step: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Target rows for a global step: positions [step*B, (step+1)*B) of an endless stream of
    permutations (one per pass over the target set), independent of the source epochs."""
    padded_size = round_up(batch_size, multiple)
    key = [seed, _TARGET_STREAM]
    return _stream(num_target, global_step * batch_size, batch_size, key, padded_size)


def shard_stream_indices(
    count: int,
    batch_size: int,
    processes: int,
    seed: int,
    stream: str,
    process: int,
    global_step: int,
    padded_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One process's rows of its own shard (``count`` rows) for a global step, ``stream``
    "source" or "target": an endless stream of permutations keyed by (seed, process).

    Each process supplies ``batch_size // processes`` rows of the global batch; the
    ``batch_size % processes`` extra rows rotate over the processes step by step, so every
    process supplies the same number of rows over any ``processes`` consecutive steps.
    """
    base, extra = divmod(batch_size, processes)

    def takes_extra(step: int) -> bool:
        return (process - step) % processes < extra

    cycles, rest = divmod(global_step, processes)
    start = global_step * base + cycles * extra
    start += sum(takes_extra(step) for step in range(global_step - rest, global_step))
    size = base + takes_extra(global_step)
    key = [seed, {"source": _SOURCE_STREAM, "target": _TARGET_STREAM}[stream], 1000 + process]
    return _stream(count, start, size, key, padded_size)

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
import zlib

import numpy as np

from jaxdann import config as config_lib

__all__ = [
    "Split",
    "ExperimentData",
    "describe_fingerprint",
    "load_experiment_data",
    "load_pacs_domains",
    "steps_per_epoch",
    "source_batch_indices",
    "target_batch_indices",
    "shard_stream_indices",
]

_SOURCE_STREAM, _TARGET_STREAM, _LIMIT_STREAM = 1, 2, 3
FINGERPRINT_SPLITS = ("source", "target", "target_eval", "validation")


@dataclasses.dataclass(frozen=True)
class Split:
    """uint8 NHWC images (resized and cropped, not normalised) and int32 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    source: Split  # labelled training domain
    target: Split  # unlabelled training domain: its labels are never given to the train step
    target_eval: Split  # where target accuracy is measured
    validation: Split | None  # neither source-train nor target: for model selection
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

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
                crc = zlib.crc32(np.ascontiguousarray(split.images))
                crc = zlib.crc32(split.labels.astype(np.int32), crc)
                seen[id(split)] = [len(split), crc]
                values += seen[id(split)]
        return np.asarray(values, np.int64)


def describe_fingerprint(values: np.ndarray) -> dict:
    """:attr:`ExperimentData.fingerprint`'s numbers by split, as ``data.json`` holds them."""
    pairs = np.asarray(values).reshape(len(FINGERPRINT_SPLITS), 2).tolist()
    return {
        name: None if count < 0 else {"images": count, "crc32": f"{crc:08x}"}
        for name, (count, crc) in zip(FINGERPRINT_SPLITS, pairs, strict=True)
    }


def _limit(split: Split, limit: int) -> Split:
    """A fixed subset (the same for every training seed, so seeds compare on the same data)."""
    if limit <= 0 or len(split) <= limit:
        return split
    keep = np.sort(np.random.default_rng(_LIMIT_STREAM).permutation(len(split))[:limit])
    return Split(split.images[keep], split.labels[keep])


def _concat(splits: list[Split]) -> Split:
    return Split(
        np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits])
    )


def load_experiment_data(
    config, domains: dict | None = None, shard: tuple[int, int] = (0, 1)
) -> ExperimentData:
    """Loads the source, target and validation data a config names.

    ``domains`` (PACS only): already loaded ``jaxdann.data.Domain`` objects by name, so that a
    sweep over many runs decodes (or reads from the cache) each domain once.

    ``shard=(index, count)``: this process's share of every split, every ``count``-th image from
    ``index`` (PACS files are decoded only for the share); ``data.limit`` then applies per shard
    (``ceil(limit / count)`` each).
    """
    if config.data.name == "digits":
        return _load_digits(config, shard)
    return _load_pacs(config, domains, shard)


def _shard(split: Split, shard: tuple[int, int]) -> Split:
    index, count = shard
    return split if count == 1 else Split(split.images[index::count], split.labels[index::count])


def _shard_limit(limit: int, shard: tuple[int, int]) -> int:
    return -(-limit // shard[1]) if limit > 0 else 0


def load_pacs_domains(config, names, shard: tuple[int, int] = (0, 1)) -> dict:
    """The named PACS domains, read the way ``config.data`` says (folder walk or TFDS)."""
    from jaxdann import data as pacs

    data = config.data
    root = data.root or pacs.default_root()
    if data.format == "tfds":
        from jaxdann.tfds_pacs import load_domains_tfds

        return load_domains_tfds(
            root, names, resize=data.resize, crop=data.crop, on_bad=data.on_bad, shard=shard
        )
    return pacs.load_domains(
        root,
        names,
        resize=data.resize,
        crop=data.crop,
        cache_dir=data.cache_dir or None,
        on_bad=data.on_bad,
        shard=shard,
    )


def _load_digits(config, shard: tuple[int, int]) -> ExperimentData:
    from jaxdann.demo_data import CLASS_NAMES, make_digits_splits

    splits = make_digits_splits(config.data.crop, config.data.target, config.data.target_renderings)

    def split(arrays) -> Split:
        return _limit(_shard(Split(*arrays), shard), _shard_limit(config.data.limit, shard))

    return ExperimentData(
        source=split(splits.source_train),
        target=split(splits.target_train),
        target_eval=split(splits.target_test),
        validation=(
            None
            if config.data.validation in config_lib.NO_VALIDATION
            else split(splits.source_validation)
        ),
        class_names=CLASS_NAMES,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


def _load_pacs(config, domains: dict | None, shard: tuple[int, int]) -> ExperimentData:
    from jaxdann import data as pacs

    data = config.data
    validation = "" if data.validation in config_lib.NO_VALIDATION else data.validation
    validation_names = [name for name in validation.split(",") if name]
    for name in validation_names:
        if name in (data.source, data.target):
            raise config_lib.ConfigError(
                f"config key data.validation lists {name!r}, which is the source or target; "
                "validation must use held-out domains."
            )
    if data.source == data.target:
        raise config_lib.ConfigError(
            f"config keys data.source and data.target are both {data.source!r}."
        )
    names = [data.source, data.target, *validation_names]
    preloaded = not (domains is None or any(name not in domains for name in names))
    if not preloaded:
        domains = load_pacs_domains(config, names, shard)

    def split(name: str) -> Split:
        whole = Split(domains[name].images, domains[name].labels)
        # Preloaded domains (one load for many runs) are whole: keep this process's share.
        part = _shard(whole, shard) if preloaded else whole
        return _limit(part, _shard_limit(data.limit, shard))

    target = split(data.target)
    validation = _concat([split(n) for n in validation_names]) if validation_names else None
    return ExperimentData(
        source=split(data.source),
        target=target,
        # The seed's protocol: accuracy on every target image (unlabelled in training).
        target_eval=target,
        validation=validation,
        class_names=domains[data.source].class_names,
        mean=pacs.IMAGENET_MEAN,
        std=pacs.IMAGENET_STD,
    )


def steps_per_epoch(num_source: int, batch_size: int, drop_last: bool) -> int:
    steps = num_source // batch_size if drop_last else -(-num_source // batch_size)
    if steps == 0:
        raise config_lib.ConfigError(
            f"the source set has {num_source} images, fewer than one batch of {batch_size} with "
            "data.drop_last=true; lower batch_size."
        )
    return steps


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def source_batch_indices(
    num_source: int, batch_size: int, seed: int, epoch: int, drop_last: bool, multiple: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch's source batches as (indices, mask): a fresh permutation, cut into batches.

    The last batch may be short: it is padded (mask 0) to the full batch size rounded up to a
    multiple of ``multiple`` (the device count), so every step has one static shape.
    """
    order = np.random.default_rng([seed, _SOURCE_STREAM, epoch]).permutation(num_source)
    padded_size = _round_up(batch_size, multiple)
    batches = []
    for step in range(steps_per_epoch(num_source, batch_size, drop_last)):
        indices = order[step * batch_size : (step + 1) * batch_size]
        mask = np.zeros(padded_size, np.float32)
        mask[: len(indices)] = 1.0
        padded = np.zeros(padded_size, np.int32)
        padded[: len(indices)] = indices
        batches.append((padded, mask))
    return batches


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
    padded_size = _round_up(batch_size, multiple)
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

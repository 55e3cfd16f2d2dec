"""Batches decoded from image files while training (``data.streaming``), through Grain.

Memory then holds the file lists and a few batches, never the data set, so a data set of any
size trains (DomainNet's 600,000 images on one small machine).

- :class:`TrainBatches` maps a global step to that step's batch: the rows the in-memory pools
  would gather (:func:`jaxdann.data.pipeline.source_batch` and ``target_batch_indices``, the
  same pure functions of (seed, epoch, step)), decoded and transformed
  (:class:`~jaxdann.data.image_transforms.ImageTransform`). Random augmentations draw from a
  generator keyed by (seed, step, domain, row), so what a step sees never depends on which
  worker decoded it.
- :func:`train_iterator` is a Grain pipeline over the run's steps: ``MapDataset.range`` ->
  ``map(TrainBatches)`` -> threads (``ReadOptions``) -> worker processes (``mp_prefetch``). Its
  state (``get_state``) is saved with every checkpoint and restored on resume, so a resumed run
  reads what an unbroken one reads.
- :class:`EvalBatches` / :func:`eval_iterator`: a split in order, centre-cropped, padded to
  whole batches (mask 0), for accuracy and the validators.

A file that cannot be decoded does not stop the worker: its row is masked out and the batch
names it (``bad``); the feed then stops the run with a DataError naming it, or with
``data.on_bad=skip`` warns and trains without it.
"""

from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np
from absl import flags

from jaxdann.data import pipeline
from jaxdann.data.folder import DECODE_ERRORS
from jaxdann.data.image_transforms import ImageTransform
from jaxdann.data.pipeline import FileSplit

__all__ = [
    "EvalBatches",
    "TrainBatches",
    "default_workers",
    "eval_iterator",
    "image_transform",
    "train_iterator",
]

_AUGMENT_STREAM = 4  # the source and target orders are streams 1 and 2, data.limit's 3
_ENDLESS = 2**40  # the train pipeline's length: any run's steps, epochs may grow on resume
_MAX_WORKERS = 8


def image_transform(data, *, train: bool) -> ImageTransform:
    """The config's transform: training's augmentations where ``train``, else centre crops."""
    augment = {}
    if train:
        augment = {
            "resized_crop_scale": float(data.resized_crop_scale),
            "color_jitter": float(data.color_jitter),
            "grayscale": float(data.grayscale),
        }
    return ImageTransform(
        int(data.resize),
        int(data.crop),
        decode=data.decode,
        resize_mode=data.resize_mode,
        **augment,
    )


def default_workers(workers: int) -> int:
    """``data.workers``: -1 is one process per core, at most 8."""
    return min(os.cpu_count() or 1, _MAX_WORKERS) if workers < 0 else workers


def _decode_rows(split: FileSplit, rows, mask, transform, key) -> tuple[np.ndarray, list[str]]:
    """uint8 images of the rows with mask 1 (zeros elsewhere), and the files that failed
    (their mask is set to 0 in place). ``key``: the batch's generator key (each row's generator
    is keyed by it and the row's position), or ``None`` for no randomness."""
    images = np.zeros((len(rows), *split.image_shape), np.uint8)
    bad = []
    for position in np.flatnonzero(mask):
        path = split.path(int(rows[position]))
        rng = None if key is None else np.random.default_rng([*key, int(position)])
        try:
            images[position] = transform(path, rng)
        except DECODE_ERRORS as error:
            mask[position] = 0.0
            bad.append(f"{path} ({type(error).__name__}: {error})")
    return images, bad


@dataclasses.dataclass(frozen=True)
class TrainBatches:
    """Global step -> ``{"step", "source_images", "source_labels", "source_mask",
    ["target_images", "target_mask"], "bad"}``, padded to ``batch_size`` rounded up to a
    multiple of ``multiple`` (the device count)."""

    source: FileSplit
    target: FileSplit | None  # None: the method reads no target images
    transform: ImageTransform
    batch_size: int
    multiple: int
    seed: int
    steps_per_epoch: int

    def __call__(self, step: int) -> dict:
        step = int(step)
        epoch, index = divmod(step, self.steps_per_epoch)
        rows, mask = pipeline.source_batch(
            len(self.source), self.batch_size, self.seed, epoch, index, self.multiple
        )
        images, bad = _decode_rows(self.source, rows, mask, self.transform, self._key(step, 0))
        batch = {
            "step": np.int64(step),
            "source_images": images,
            "source_labels": self.source.labels[rows],
            "source_mask": mask,
        }
        if self.target is not None:
            rows, mask = pipeline.target_batch_indices(
                len(self.target), self.batch_size, self.seed, step, self.multiple
            )
            key = self._key(step, 1)
            images, bad_target = _decode_rows(self.target, rows, mask, self.transform, key)
            batch |= {"target_images": images, "target_mask": mask}
            bad += bad_target
        batch["bad"] = np.asarray(bad, dtype=object) if bad else np.zeros(0, np.int8)
        return batch

    def _key(self, step: int, domain: int) -> list[int] | None:
        """The generator key of a step's source (0) or target (1) rows, if any are random."""
        return [self.seed, _AUGMENT_STREAM, step, domain] if self.transform.augments else None


@dataclasses.dataclass(frozen=True)
class EvalBatches:
    """Batch ``i`` of a split in order: ``{"images", "labels", "mask", "bad"}``, rows
    ``[i * size, (i + 1) * size)``, the last padded (mask 0). ``hide_labels``: zeros instead of
    the labels (the target-train images, whose labels training never reads)."""

    split: FileSplit
    transform: ImageTransform
    size: int
    hide_labels: bool = False

    def __len__(self) -> int:
        return -(-len(self.split) // self.size)

    def __call__(self, index: int) -> dict:
        positions = np.arange(int(index) * self.size, (int(index) + 1) * self.size)
        mask = (positions < len(self.split)).astype(np.float32)
        rows = np.where(mask > 0, positions, 0)
        images, bad = _decode_rows(self.split, rows, mask, self.transform, None)
        labels = self.split.labels[rows]
        return {
            "images": images,
            "labels": np.zeros_like(labels) if self.hide_labels else labels,
            "mask": mask,
            "bad": np.asarray(bad, dtype=object) if bad else np.zeros(0, np.int8),
        }


def _grain_flags_usable() -> None:
    """Grain reads its settings from absl flags, which a program that does not parse absl
    flags (a notebook, a test) leaves unparsed, and reading an unparsed flag raises. Grain's own
    flags are then marked as given, with their defaults, as Grain itself does for its debug
    flags."""
    if flags.FLAGS.is_parsed():
        return
    for name in list(flags.FLAGS):
        if name.startswith("grain_"):
            flags.FLAGS[name].present = True


def train_iterator(
    batches: TrainBatches, workers: int, state: dict | None = None
) -> grain.DatasetIterator:
    """Grain's iterator over the run's steps from step 0, or from where ``state`` (an earlier
    iterator's ``get_state()``) left off; ``workers`` decoding processes (0: threads)."""
    _grain_flags_usable()
    dataset = grain.MapDataset.range(0, _ENDLESS).map(batches)
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if workers > 0:
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
        iterable = iterable.mp_prefetch(options)
    iterator = iter(iterable)
    if state is not None:
        iterator.set_state(state)
    return iterator


def eval_iterator(batches: EvalBatches, threads: int) -> grain.DatasetIterator:
    """The split's batches in order, decoded by ``threads`` threads of this process (an
    evaluation pass is short: no worker processes to start)."""
    _grain_flags_usable()
    dataset = grain.MapDataset.range(0, len(batches)).map(batches)
    options = grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=max(threads, 1))
    return iter(dataset.to_iter_dataset(options))

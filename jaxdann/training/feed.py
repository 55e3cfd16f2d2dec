"""Where each step's batch comes from: device-resident pools, or one data shard per host.

Both feeds hand the training loop the same things -- global arrays sharded along the mesh's
'data' axis for every step, (accuracy, labels, predictions) for an evaluation set, and a split's
logits and features for the validators (``embed``) -- so the loop has one code path for one
device, many devices and many hosts.

- :class:`DevicePools` (default): every device holds every image as uint8; a step's rows are
  gathered on the device from indices. Each host loads all of the data.
- :class:`HostShards` (``data.shard_per_host=true``): each process loads only its shard (every
  P-th image) into host memory, draws its part of each batch from it, and the global batch is
  assembled from the processes' parts (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxdann import config as config_lib
from jaxdann.data import pipeline as input_pipeline
from jaxdann.errors import DataError, is_user_error
from jaxdann.methods import get_method
from jaxdann.training import parallel, run_folder

__all__ = [
    "ACCURACY_OUTPUTS",
    "EMBEDDING_OUTPUTS",
    "EMBED_SPLITS",
    "EVAL_SPLITS",
    "LOGIT_OUTPUTS",
    "DevicePools",
    "HostShards",
    "check_process_count",
    "collect",
    "data_fingerprints",
    "embedding_outputs",
    "gathers",
    "load_everywhere",
    "load_shard",
    "make_feed",
    "real_rows",
    "record_process_count",
]

Evaluation = tuple[float, np.ndarray, np.ndarray]  # accuracy, labels, predictions
EVAL_SPLITS = {"target": "target_eval", "validation": "validation"}  # evaluate(name) -> split
# embed(name) -> split: the unlabelled target-train images and the source-train images too.
EMBED_SPLITS = EVAL_SPLITS | {"target_train": "target", "source": "source"}
ACCURACY_OUTPUTS = ("correct", "predictions", "labels", "mask")
EMBEDDING_OUTPUTS = ("logits", "features", "labels", "mask")
LOGIT_OUTPUTS = ("logits", "labels", "mask")  # what the validators but DEV read: no features


def embedding_outputs(features: bool) -> tuple[str, ...]:
    """What :meth:`DevicePools.embed` fetches: features only where asked (they are the large
    part, one row of the backbone's width per image)."""
    return EMBEDDING_OUTPUTS if features else LOGIT_OUTPUTS


def real_rows(outputs: list[dict], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The real rows (mask > 0) of each of ``keys``, concatenated over the fetched batches."""
    keep = np.concatenate([out["mask"] for out in outputs]) > 0
    return {key: np.concatenate([out[key] for out in outputs])[keep] for key in keys}


def collect(outputs: list[dict], count: int) -> Evaluation:
    """Accuracy over ``count`` rows, and the real rows' labels and predictions."""
    outputs = jax.device_get(outputs)
    rows = real_rows(outputs, ("labels", "predictions"))
    correct = float(sum(np.asarray(out["correct"]) for out in outputs))
    return correct / count, rows["labels"], rows["predictions"]


def _with_labels(eval_step: Callable) -> Callable:
    def evaluate(params, images, labels, mask, outputs=ACCURACY_OUTPUTS):
        results = eval_step(params, images, labels, mask) | {"labels": labels, "mask": mask}
        return {key: results[key] for key in outputs}

    return evaluate


def make_evaluator(eval_step: Callable, mesh, *, gather: bool) -> Callable:
    """``eval_step`` jitted for a feed, its outputs replicated (every process can read the
    predictions). ``gather``: the images come as a device pool plus indices (DevicePools),
    else as the batch itself (HostShards). ``outputs`` (static: one executable per set) names
    what comes back, :data:`ACCURACY_OUTPUTS` by default, :data:`EMBEDDING_OUTPUTS` for the
    validators. Built once, it serves every feed of that kind on ``mesh``: the runs of a study
    share it."""
    evaluate = _with_labels(eval_step)
    if gather:

        def evaluate_batch(params, images, labels, indices, mask, outputs=ACCURACY_OUTPUTS):
            return evaluate(params, images[indices], labels[indices], mask, outputs)

    else:
        evaluate_batch = evaluate
    return jax.jit(
        evaluate_batch,
        static_argnames="outputs",
        out_shardings=parallel.replicated(mesh),
        compiler_options=parallel.compiler_options(),
    )


@jax.jit
def _gather_batch(source_images, source_labels, target_pool, indices):
    """A training batch from the device pools: rows chosen by index on the device."""
    batch = {
        "source_images": source_images[indices["source"]],
        "source_labels": source_labels[indices["source"]],
        "source_mask": indices["source_mask"],
    }
    if target_pool is not None:
        batch["target_images"] = target_pool[indices["target"]]
        batch["target_mask"] = indices["target_mask"]
    return batch


class DevicePools:
    """All data on every device (uint8); batches gathered on the device by index."""

    def __init__(self, data: input_pipeline.ExperimentData, config, mesh, evaluator: Callable):
        self.config, self.mesh = config, mesh
        self.needs_target = get_method(config.adaptation).needs_target
        replicated = parallel.replicated(mesh)
        self.sharded = parallel.batch_sharded(mesh)

        def to_device(split):
            return (
                jax.device_put(split.images, replicated),
                jax.device_put(split.labels, replicated),
                len(split),
            )

        self.source = to_device(data.source)
        # The target pool carries no labels: nothing in training can read them.
        self.target = (
            (jax.device_put(data.target.images, replicated), len(data.target))
            if self.needs_target
            else None
        )
        self.eval_pools = {"target": to_device(data.target_eval)}
        if data.validation is not None:
            self.eval_pools["validation"] = to_device(data.validation)
        self.source_count = len(data.source)
        counts = {"source": len(data.source), "target": len(data.target)}
        counts |= {EVAL_SPLITS[name]: pool[2] for name, pool in self.eval_pools.items()}
        self.rows_per_process = {
            name: [count] * jax.process_count() for name, count in counts.items()
        }

        self._gather = _gather_batch
        self._evaluate = evaluator
        # The target-train images the validators read: a pool already on the device, else
        # the host arrays, copied to the device for each call (no pool held for them alone).
        if data.target is data.target_eval:
            self._target_train = self.eval_pools["target"][0]
        elif self.needs_target:
            self._target_train = self.target[0]
        else:
            self._target_train = data.target.images
        self._replicated = replicated

    def batches(self, epoch: int, steps_per_epoch: int) -> Iterator[dict]:
        config = self.config
        batch_size, devices = int(config.batch_size), self.mesh.size
        source = input_pipeline.source_batch_indices(
            self.source_count, batch_size, config.seed, epoch, config.data.drop_last, devices
        )
        for index, (source_indices, source_mask) in enumerate(source):
            indices = {"source": source_indices, "source_mask": source_mask}
            if self.needs_target:
                target_indices, target_mask = input_pipeline.target_batch_indices(
                    self.target[1],
                    batch_size,
                    config.seed,
                    epoch * steps_per_epoch + index,
                    devices,
                )
                indices |= {"target": target_indices, "target_mask": target_mask}
            indices = jax.device_put(indices, self.sharded)
            target_pool = self.target[0] if self.needs_target else None
            yield self._gather(self.source[0], self.source[1], target_pool, indices)

    def close(self) -> None:
        """Nothing to release: the pools go with the feed."""

    def evaluate(self, params, name: str) -> Evaluation:
        images, labels, count = self.eval_pools[name]
        return collect(self._pass(params, images, labels, count, ACCURACY_OUTPUTS), count)

    def embed(self, params, name: str, features: bool = True) -> dict[str, np.ndarray]:
        """``{"logits", "features", "labels"}`` of every image of split ``name`` (``source``,
        ``target_train`` (labels all 0), ``target``, ``validation``), for the validators;
        without ``"features"`` unless ``features``."""
        if name == "target_train":  # never their labels: zeros stand in
            count = len(self._target_train)
            images = jax.device_put(self._target_train, self._replicated)
            labels = jax.device_put(np.zeros(count, np.int32), self._replicated)
        else:
            images, labels, count = {"source": self.source, **self.eval_pools}[name]
        wanted = embedding_outputs(features)
        outputs = jax.device_get(self._pass(params, images, labels, count, wanted))
        return real_rows(outputs, wanted[:-1])

    def _pass(self, params, images, labels, count: int, outputs: tuple[str, ...]) -> list:
        # Small pools get one small batch, not one padded to eval_batch_size.
        size = input_pipeline.round_up(min(int(self.config.eval_batch_size), count), self.mesh.size)
        results = []
        for start in range(0, count, size):
            indices = np.arange(start, start + size)
            mask = (indices < count).astype(np.float32)
            indices = np.where(indices < count, indices, 0).astype(np.int32)
            put = lambda x: jax.device_put(x, self.sharded)  # noqa: E731
            batch = (params, images, labels, put(indices), put(mask))
            results.append(self._evaluate(*batch, outputs=outputs))
        return results


class HostShards:
    """This process's shard in host memory; each process supplies its rows of every batch.

    The global batch of ``batch_size`` rows is split over the P processes (``batch_size % P``
    extra rows rotate over them step by step), each part drawn from the process's own shard by
    :func:`jaxdann.data.pipeline.shard_stream_indices` and padded to a multiple of the local
    device count. Data order therefore depends on the process count, never on restarts. Every
    step is a full global batch, so an epoch is ``ceil(N / batch_size)`` batches
    (``floor`` with ``data.drop_last``), not exactly one pass over each shard.
    """

    def __init__(self, data: input_pipeline.ExperimentData, config, mesh, evaluator: Callable):
        self.config, self.mesh, self.data = config, mesh, data
        self.needs_target = get_method(config.adaptation).needs_target
        self.sharded = parallel.batch_sharded(mesh)
        self.process, self.processes = jax.process_index(), jax.process_count()
        self.local_devices = mesh.size // self.processes
        splits = {"source": data.source, "target": data.target, "target_eval": data.target_eval}
        if data.validation is not None:
            splits["validation"] = data.validation
        self.splits = splits
        local = np.asarray([len(split) for split in splits.values()], np.int64)
        gathered = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, len(local))
        self.rows_per_process = {
            name: gathered[:, column].tolist() for column, name in enumerate(splits)
        }
        empty = [name for name, rows in self.rows_per_process.items() if min(rows) == 0]
        if empty:
            raise config_lib.ConfigError(
                f"data.shard_per_host: the {', '.join(empty)} data has fewer images than the "
                f"{self.processes} processes, so some shard is empty; turn data.shard_per_host off."
            )
        self.source_count = sum(self.rows_per_process["source"])
        self.padded = input_pipeline.round_up(
            -(-int(config.batch_size) // self.processes), self.local_devices
        )
        self._evaluate = evaluator

    def _put(self, local: np.ndarray) -> jax.Array:
        shape = (self.processes * local.shape[0], *local.shape[1:])
        return jax.make_array_from_process_local_data(self.sharded, local, shape)

    def _rows(self, stream: str, split, global_step: int) -> tuple[np.ndarray, np.ndarray]:
        return input_pipeline.shard_stream_indices(
            len(split),
            int(self.config.batch_size),
            self.processes,
            int(self.config.seed),
            stream,
            self.process,
            global_step,
            self.padded,
        )

    def batches(self, epoch: int, steps_per_epoch: int) -> Iterator[dict]:
        source, target = self.data.source, self.data.target
        for index in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + index
            rows, mask = self._rows("source", source, global_step)
            batch = {
                "source_images": source.images[rows],
                "source_labels": source.labels[rows],
                "source_mask": mask,
            }
            if self.needs_target:
                rows, mask = self._rows("target", target, global_step)
                batch |= {"target_images": target.images[rows], "target_mask": mask}
            yield {key: self._put(value) for key, value in batch.items()}

    def close(self) -> None:
        """Nothing to release: the shard goes with the feed."""

    def evaluate(self, params, name: str) -> Evaluation:
        count = sum(self.rows_per_process[EVAL_SPLITS[name]])
        return collect(self._pass(params, EVAL_SPLITS[name], ACCURACY_OUTPUTS), count)

    def embed(self, params, name: str, features: bool = True) -> dict[str, np.ndarray]:
        """As :meth:`DevicePools.embed`: every process gets every process's rows."""
        wanted = embedding_outputs(features)
        outputs = jax.device_get(self._pass(params, EMBED_SPLITS[name], wanted))
        return real_rows(outputs, wanted[:-1])

    def _pass(self, params, split_name: str, outputs: tuple[str, ...]) -> list:
        split = self.splits[split_name]
        rows_per_process = self.rows_per_process[split_name]
        count, most = sum(rows_per_process), max(rows_per_process)
        size = input_pipeline.round_up(
            -(-min(int(self.config.eval_batch_size), count) // self.processes),
            self.local_devices,
        )
        results = []
        for start in range(0, most, size):  # the same number of batches on every process
            rows = np.arange(start, start + size)
            mask = (rows < len(split)).astype(np.float32)
            rows = np.where(rows < len(split), rows, 0)
            # The target-train labels stay on the host: zeros stand in for them.
            labels = np.zeros_like(rows) if split_name == "target" else split.labels[rows]
            local = (split.images[rows], labels.astype(np.int32), mask)
            results.append(self._evaluate(params, *map(self._put, local), outputs=outputs))
        return results


def load_shard(config, shard: tuple[int, int]) -> input_pipeline.ExperimentData:
    """This process's data (its shard, or all of it); on several processes a failure on any one
    stops every process (:func:`load_everywhere`)."""
    what = "data shard" if shard[1] > 1 else "data"
    return load_everywhere(lambda: input_pipeline.load_experiment_data(config, shard=shard), what)


def load_everywhere(load: Callable[[], Any], what: str = "data") -> Any:
    """``load()`` on this process; on several processes, a failure on any one stops them all.

    Each process checks only the files it reads, so one bad image would otherwise stop one
    process and leave the others waiting in the first collective until the distributed timeout.
    """
    if jax.process_count() == 1:
        return load()
    try:
        loaded, error = load(), None
    except Exception as caught:  # reported on every process below
        loaded, error = None, caught
    failed = np.asarray(multihost_utils.process_allgather(np.int32(error is not None)))
    if error is not None:
        if not is_user_error(error):
            raise error  # a bug: its own traceback (the other processes stop below)
        # Settings that do not fit stay ConfigErrors (exit 2); unreadable data is a DataError.
        kind = config_lib.ConfigError if isinstance(error, config_lib.ConfigError) else DataError
        raise kind(
            f"process {jax.process_index()} could not load its {what}: "
            f"{type(error).__name__}: {error}"
        )
    if failed.any():
        processes = ", ".join(str(i) for i in np.flatnonzero(failed.reshape(-1)))
        raise DataError(
            f"process(es) {processes} could not load their {what} (see their output); "
            "fix the data and rerun."
        )
    return loaded


def data_fingerprints(data: input_pipeline.ExperimentData, sharded: bool) -> list[dict]:
    """The data the run reads (:attr:`~jaxdann.data.pipeline.ExperimentData.fingerprint`,
    described): one entry, or one per process with ``data.shard_per_host``.

    On several processes every one gets every fingerprint, so a check on them refuses on all
    processes alike; without sharding, every process must hold the same data.
    """
    own = data.fingerprint
    if jax.process_count() == 1:
        return [input_pipeline.describe_fingerprint(own)]
    # As int32 pairs: without jax_enable_x64 a gathered int64 would be cut to 32 bits.
    gathered = multihost_utils.process_allgather(own.view(np.int32))
    rows = np.ascontiguousarray(np.asarray(gathered, np.int32)).reshape(-1, 2 * len(own))
    rows = rows.view(np.int64)
    described = [input_pipeline.describe_fingerprint(row) for row in rows]
    if sharded:
        return described
    differ = [index for index, entry in enumerate(described) if entry != described[0]]
    if differ:
        raise config_lib.ConfigError(
            f"process(es) {', '.join(map(str, differ))} read other data than process 0; without "
            "data.shard_per_host every process must read the same: check data.root on every host."
        )
    return described[:1]


def check_process_count(workdir: str, *, resuming: bool) -> None:
    """Shard-mode data order depends on the process count: a run resumes only with the same.

    A resumed run must match the count a new one recorded (:func:`record_process_count`).
    """
    path = os.path.join(workdir, "shards.json")
    if resuming and os.path.exists(path):
        recorded = run_folder.read_json(path)["process_count"]
        if recorded != jax.process_count():
            raise config_lib.ConfigError(
                f"{workdir} was trained with data.shard_per_host on {recorded} processes; resume "
                f"it on {recorded} (not {jax.process_count()}) or choose a new --workdir."
            )


def record_process_count(workdir: str) -> None:
    """Writes ``workdir/shards.json`` once the run has started (after its checks and restore)."""
    if jax.process_index() == 0:
        run_folder.write_json(
            os.path.join(workdir, "shards.json"), {"process_count": jax.process_count()}
        )


def make_feed(data, config, mesh, evaluator: Callable):
    """The feed ``config`` asks for: :class:`DevicePools`, :class:`HostShards` or
    :class:`~jaxdann.training.stream_feed.StreamingFeed` (``data.streaming``); ``evaluator``:
    :func:`make_evaluator`'s, made with ``gather=`` :func:`gathers` ``(config)``."""
    if config.data.streaming:
        from jaxdann.training.stream_feed import StreamingFeed

        return StreamingFeed(data, config, mesh, evaluator)
    kind = HostShards if config.data.shard_per_host else DevicePools
    return kind(data, config, mesh, evaluator)


def gathers(config) -> bool:
    """Does the feed ``config`` asks for keep evaluation images on the device (rows gathered by
    index), rather than passing each batch itself?"""
    return not (config.data.shard_per_host or config.data.streaming)

"""The feed for streamed data (``data.streaming``): batches decoded from files by Grain.

:class:`StreamingFeed` hands the training loop what the in-memory feeds hand it (global batches
sharded over the mesh's 'data' axis, evaluations, embeddings for the validators), from the
pipelines of :mod:`jaxdann.data.streaming`. Training batches come from one Grain iterator over
the whole run, whose state is saved with each checkpoint (:meth:`StreamingFeed.state`) and
restored on resume (:meth:`StreamingFeed.resume`). Without augmentations a streamed run reads the
same pixels in the same order as the pools, so it trains to the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import jax
import numpy as np

from jaxdann.data import pipeline as input_pipeline
from jaxdann.data import streaming
from jaxdann.data.folder import SKIP_HINT, format_paths
from jaxdann.errors import ConfigError, DataError
from jaxdann.methods import get_method
from jaxdann.training import parallel
from jaxdann.training.feed import (
    ACCURACY_OUTPUTS,
    EMBED_SPLITS,
    EVAL_SPLITS,
    collect,
    embedding_outputs,
    real_rows,
)

__all__ = ["StreamingFeed"]

# Images per evaluation batch at most: the batches the threads decode ahead and the activations
# of the one being computed are what an evaluation pass holds in memory.
_EVAL_BATCH_LIMIT = 256


class StreamingFeed:
    """Batches decoded from files while training; evaluation sets streamed in order."""

    def __init__(self, data: input_pipeline.ExperimentData, config, mesh, evaluator: Callable):
        if jax.process_count() > 1:
            raise ConfigError(
                "config key data.streaming=true reads the files on one process, and this run "
                f"has {jax.process_count()}; run on one host, or set data.streaming=false."
            )
        self.config, self.mesh, self.data = config, mesh, data
        self.needs_target = get_method(config.adaptation).needs_target
        self.sharded = parallel.batch_sharded(mesh)
        self.source_count = len(data.source)
        counts = {"source": len(data.source), "target": len(data.target)}
        counts |= {"target_eval": len(data.target_eval)}
        if data.validation is not None:
            counts["validation"] = len(data.validation)
        self.rows_per_process = {name: [count] for name, count in counts.items()}
        self.workers = streaming.default_workers(int(config.data.workers))
        self._evaluate = evaluator
        self._iterator = None
        self._resume_state: dict | None = None

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint's pipeline state (:meth:`state` when it was saved). Grain's
        state is per decoding process, so the run resumes with as many."""
        saved = state.get("workers")
        if saved != self.workers:
            raise ConfigError(
                f"this run's data pipeline was saved with {saved} decoding processes and would "
                f"resume with {self.workers}; resume with --config.data.workers={saved}."
            )
        self._resume_state = state

    def state(self) -> dict | None:
        """The training pipeline's state: Grain's iterator state (where the next batch begins)
        and the number of decoding processes it belongs to; ``None`` before any batch."""
        if self._iterator is None:
            return self._resume_state
        return {"workers": self.workers, "grain": self._iterator.get_state()}

    def close(self) -> None:
        """Stops the decoding processes and threads."""
        if self._iterator is not None:
            iterator, self._iterator = self._iterator, None
            iterator.close()

    def batches(self, epoch: int, steps_per_epoch: int) -> Iterator[dict]:
        iterator = self._train_iterator(steps_per_epoch)
        for index in range(steps_per_epoch):
            batch = next(iterator)
            step = int(batch.pop("step"))
            if step != epoch * steps_per_epoch + index:  # a state that does not fit the run
                raise ValueError(f"the data pipeline gave step {step}'s batch in epoch {epoch}")
            self._check_bad(batch.pop("bad"), "training")
            yield jax.device_put(batch, self.sharded)

    def _train_iterator(self, steps_per_epoch: int):
        if self._iterator is None:
            config = self.config
            batches = streaming.TrainBatches(
                source=self.data.source,
                target=self.data.target if self.needs_target else None,
                transform=streaming.image_transform(config.data, train=True),
                batch_size=int(config.batch_size),
                multiple=self.mesh.size,
                seed=int(config.seed),
                steps_per_epoch=steps_per_epoch,
            )
            saved = self._resume_state["grain"] if self._resume_state else None
            self._iterator = streaming.train_iterator(batches, self.workers, saved)
        return self._iterator

    def _check_bad(self, bad: np.ndarray, what: str) -> None:
        """Files a batch could not decode: a DataError naming them, or (``data.on_bad=skip``)
        a warning, their rows already masked out."""
        if not len(bad):
            return
        message = f"{len(bad)} image file(s) of the {what} data cannot be decoded: "
        message += format_paths([str(entry) for entry in bad])
        if self.config.data.on_bad == "error":
            raise DataError(f"{message}; replace or remove them, or {SKIP_HINT}.")
        warnings.warn(f"{message}; leaving them out (data.on_bad=skip).", stacklevel=2)

    def evaluate(self, params, name: str):
        outputs, count = self._pass(params, EVAL_SPLITS[name], ACCURACY_OUTPUTS)
        return collect(outputs, count)

    def embed(self, params, name: str, features: bool = True) -> dict[str, np.ndarray]:
        """As :meth:`~jaxdann.training.feed.DevicePools.embed` (target-train labels: zeros)."""
        wanted = embedding_outputs(features)
        outputs, _ = self._pass(params, EMBED_SPLITS[name], wanted)
        return real_rows(jax.device_get(outputs), wanted[:-1])

    def _pass(self, params, split_name: str, outputs: tuple[str, ...]) -> tuple[list, int]:
        """The evaluator over every image of a split, in order; and how many were decoded."""
        split = getattr(self.data, split_name)
        size = min(int(self.config.eval_batch_size), _EVAL_BATCH_LIMIT, len(split))
        size = input_pipeline.round_up(size, self.mesh.size)
        batches = streaming.EvalBatches(
            split,
            streaming.image_transform(self.config.data, train=False),
            size,
            hide_labels=split_name == "target",
        )
        results, count = [], 0
        for batch in streaming.eval_iterator(batches, max(self.workers, 1)):
            self._check_bad(batch.pop("bad"), split_name)
            count += int(batch["mask"].sum())
            images, labels, mask = (
                jax.device_put(batch[key], self.sharded) for key in ("images", "labels", "mask")
            )
            if results:  # one batch computes at a time (its activations are the large part);
                jax.block_until_ready(results[-1])  # the threads decode the next meanwhile
            results.append(self._evaluate(params, images, labels, mask, outputs=outputs))
        return results, count

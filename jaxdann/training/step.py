"""The train state, the jitted train step and the evaluation step: pure functions, built once.

The train step asks the method for its update (``Method.update``: by default one gradient step
on ``Method.loss``). For DANN this is one pass over the concatenated source + target batch with
the summed loss, which gives the same gradient as the seed study's three separate backward
passes (a test checks the equality).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdann.data.transforms import normalize
from jaxdann.methods.base import Method
from jaxdann.models.network import Network

__all__ = [
    "TrainState",
    "make_course",
    "make_train_step",
    "make_eval_step",
    "summarize_epoch",
]


class TrainState(flax.struct.PyTreeNode):
    """Everything a run carries from step to step (and into checkpoints).

    ``model_state`` holds the collections beyond parameters (BatchNorm's ``batch_stats``; empty
    for networks without any). The base learning rate is state, not a constant of the compiled
    step, so runs that differ only in learning rate share one compiled executable.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    learning_rate: jax.Array
    model_state: Any = flax.struct.field(default_factory=dict)


def make_course(steps_per_epoch: int, total_steps: int, warmup_steps: int = 0) -> dict:
    """A run's length, as the train step's traced ``course`` argument (int32 scalars).

    The schedules read it at run time, so runs that differ only in data size (every source
    domain of ``jaxdann.pairs`` has its own steps per epoch) share one compiled step.
    """
    values = {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
    }
    return {key: jnp.asarray(value, jnp.int32) for key, value in values.items()}


def make_train_step(
    method: Method,
    optimizer_for: Callable[[jax.Array, dict], optax.GradientTransformation],
    schedule_for: Callable[[jax.Array, dict], Callable[[jax.Array], jax.Array]],
) -> Callable[[TrainState, dict, jax.Array, dict], tuple[TrainState, dict]]:
    """Builds ``train_step(state, batch, rng, course) -> (state, metrics)`` (not yet jitted).

    ``course`` is :func:`make_course`'s run length. ``optimizer_for(lr, course)`` and
    ``schedule_for(lr, course)`` build the optimizer and the learning-rate schedule for the
    state's base learning rate (a traced scalar) and that course. ``metrics`` are the method's
    per-step sums (see :func:`summarize_epoch`) with ``loss`` and ``learning_rate``.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array, course: dict):
        rng = jax.random.fold_in(rng, state.step)
        progress = {"step": state.step, **course}
        optimizer = optimizer_for(state.learning_rate, course)
        new_state, metrics = method.update(state, batch, rng, progress, optimizer)
        metrics["learning_rate"] = schedule_for(state.learning_rate, course)(state.step)
        return new_state.replace(step=state.step + 1), metrics

    return train_step


def summarize_epoch(method: Method, step_metrics: list[dict]) -> dict:
    """Reduces a list of per-step metric dicts on the device: one small result to fetch.

    The method turns the sums into its epoch metrics; the learning rate is the one at the
    epoch's first step (StepLR keeps it for the whole epoch); ``losses`` keeps every step's loss
    for divergence checks.
    """
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)
    totals = jax.tree.map(jnp.sum, stacked)
    summary = {"learning_rate": stacked["learning_rate"][0], "losses": stacked["loss"]}
    return summary | method.summarize(totals, stacked)


def make_eval_step(network: Network, *, mean, std) -> Callable:
    """``eval_step(variables, images, labels, mask) -> {"correct", "count", "predictions",
    "logits", "features"}``, where ``variables`` is ``(params, model_state)`` and ``features``
    are the classifier's inputs (what the validators read); under jit, outputs a caller drops
    cost nothing."""

    def eval_step(variables, images, labels, mask):
        params, model_state = variables
        features, _ = network.embed(params, model_state, normalize(images, mean, std), train=False)
        logits = network.run(params, model_state, "classifier", features, train=False)[0]
        predictions = logits.argmax(-1)
        return {
            "correct": jnp.sum((predictions == labels) * mask),
            "count": jnp.sum(mask),
            "predictions": predictions,
            "logits": logits,
            "features": features,
        }

    return eval_step

"""The fused DANN training step and the evaluation step: pure functions, jitted once.

The seed study runs three forward/backward passes per step (class loss on source, domain loss on
source, domain loss on target) before one optimizer step. Their gradients add up, so one pass
over the concatenated source + target batch with the summed loss computes the same update with a
single feature pass. A test checks the equality against the three separate passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdann.grl import dann_schedule
from jaxdann.models import DANN

__all__ = [
    "TrainState",
    "grl_coefficient",
    "normalize",
    "augment",
    "make_course",
    "make_train_step",
    "make_eval_step",
    "summarize_epoch",
    "EPOCH_METRICS",
]


class TrainState(flax.struct.PyTreeNode):
    """Everything a run carries from step to step (and into checkpoints).

    The base learning rate is state, not a constant of the compiled step, so runs that differ
    only in learning rate share one compiled executable.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    learning_rate: jax.Array


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


def grl_coefficient(
    step: jax.Array,
    *,
    schedule: str,
    maximum: float,
    gamma: float,
    total_steps: int | jax.Array,
    warmup_steps: int | jax.Array = 0,
) -> jax.Array:
    """The reversal coefficient at ``step``: a constant, or the DANN ramp times ``maximum``.

    For the first ``warmup_steps`` it is 0 (the domain classifier learns, the features do not
    hear from it); the ramp's progress then runs over the remaining steps. The step counts may
    be traced.
    """
    step = jnp.asarray(step)
    if schedule == "constant":
        value = jnp.asarray(maximum, jnp.float32)
    else:
        ramp_steps = jnp.maximum(jnp.asarray(total_steps) - warmup_steps, 1).astype(jnp.float32)
        # Times the reciprocal: what XLA made of the division by a constant this was before the
        # step counts were traced, so earlier runs repeat bit for bit.
        progress = (step - warmup_steps).astype(jnp.float32) * (1.0 / ramp_steps)
        value = maximum * dann_schedule(progress, gamma)
    return jnp.where(step < warmup_steps, 0.0, value).astype(jnp.float32)


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 NHWC -> float32 ``(x / 255 - mean) / std`` (on the device, inside the step)."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(images: jax.Array, rng: jax.Array, *, flip: bool, crop: bool) -> jax.Array:
    """Random horizontal flips and random crops (pad by 1/8 with reflection, crop back)."""
    flip_rng, crop_rng = jax.random.split(rng)
    if flip:
        flips = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0], 1, 1, 1))
        images = jnp.where(flips, images[:, :, ::-1], images)
    if crop:
        _, height, width, _ = images.shape
        pad = max(height // 8, 1)
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        offsets = jax.random.randint(crop_rng, (images.shape[0], 2), 0, 2 * pad + 1)

        def crop_one(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, 3))

        images = jax.vmap(crop_one)(padded, offsets)
    return images


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_train_step(
    model: DANN,
    optimizer_for: Callable[[jax.Array, dict], optax.GradientTransformation],
    schedule_for: Callable[[jax.Array, dict], Callable[[jax.Array], jax.Array]],
    config,
    *,
    mean,
    std,
) -> Callable[[TrainState, dict, jax.Array, dict], tuple[TrainState, dict]]:
    """Builds ``train_step(state, batch, rng, course) -> (state, metrics)`` (not yet jitted).

    ``course`` is :func:`make_course`'s run length. ``optimizer_for(lr, course)`` and
    ``schedule_for(lr, course)`` build the optimizer and the learning-rate schedule for the
    state's base learning rate (a traced scalar) and that course.

    ``batch`` holds ``source_images`` (uint8), ``source_labels``, ``source_mask`` and, with
    adaptation, ``target_images`` and ``target_mask``. There is no target label to hold.
    ``metrics`` are per-step *sums* (see :func:`summarize_epoch`), so padded rows never count.
    """
    adversarial = model.domain_classifier is not None
    domain_weight = float(config.domain_loss_weight)
    flip, crop = bool(config.data.random_flip), bool(config.data.random_crop)
    inverted = adversarial and config.grl.objective == "inverted_labels"

    def prepare(images, rng):
        if flip or crop:
            images = augment(images, rng, flip=flip, crop=crop)
        return normalize(images, mean, std)

    def train_step(state: TrainState, batch: dict, rng: jax.Array, course: dict):
        rng = jax.random.fold_in(rng, state.step)
        dropout_rng, source_rng, target_rng = jax.random.split(rng, 3)
        source_mask = batch["source_mask"]
        num_source = source_mask.shape[0]
        coefficient = grl_coefficient(
            state.step,
            schedule=config.grl.schedule,
            maximum=float(config.grl.coefficient),
            gamma=float(config.grl.gamma),
            total_steps=course["total_steps"],
            warmup_steps=course["warmup_steps"],
        )
        images = prepare(batch["source_images"], source_rng)
        if adversarial:
            target_images = prepare(batch["target_images"], target_rng)
            images = jnp.concatenate([images, target_images])

        def apply(params, method, *args):
            return model.apply(
                {"params": params}, *args, train=True, method=method, rngs={"dropout": dropout_rng}
            )

        def loss_fn(params):
            if inverted:
                # The domain classifier learns from the true domain labels on frozen features; the
                # features learn, through a frozen domain classifier, to make it predict the
                # other domain. Same dropout key: both passes see the same masks.
                features = apply(params, DANN.extract, images)
                class_logits = apply(params, DANN.classify, features[:num_source])
                domain_logits = apply(params, DANN.discriminate, jax.lax.stop_gradient(features))
                frozen = params | {
                    "domain_classifier": jax.lax.stop_gradient(params["domain_classifier"])
                }
                fooled_logits = apply(frozen, DANN.discriminate, features)
            else:
                class_logits, domain_logits = apply(
                    params, DANN.adversarial, images, num_source, coefficient
                )
            labels = batch["source_labels"]
            class_losses = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
            class_loss = _masked_mean(class_losses, source_mask)
            outputs = {
                "class_loss": jnp.sum(class_losses * source_mask),
                "class_correct": jnp.sum((class_logits.argmax(-1) == labels) * source_mask),
            }
            loss = class_loss
            if adversarial:
                target_mask = batch["target_mask"]
                domain_labels = jnp.concatenate(
                    [jnp.zeros(num_source, jnp.int32), jnp.ones(target_mask.shape[0], jnp.int32)]
                )
                domain_losses = optax.softmax_cross_entropy_with_integer_labels(
                    domain_logits, domain_labels
                )
                domain_hits = domain_logits.argmax(-1) == domain_labels
                source_part, target_part = slice(0, num_source), slice(num_source, None)
                loss_source = _masked_mean(domain_losses[source_part], source_mask)
                loss_target = _masked_mean(domain_losses[target_part], target_mask)
                loss = loss + domain_weight * (loss_source + loss_target)
                if inverted:
                    swapped = optax.softmax_cross_entropy_with_integer_labels(
                        fooled_logits, 1 - domain_labels
                    )
                    fooling_loss = _masked_mean(swapped[source_part], source_mask)
                    fooling_loss += _masked_mean(swapped[target_part], target_mask)
                    loss = loss + domain_weight * coefficient * fooling_loss
                outputs |= {
                    "domain_loss_source": jnp.sum(domain_losses[source_part] * source_mask),
                    "domain_correct_source": jnp.sum(domain_hits[source_part] * source_mask),
                    "domain_loss_target": jnp.sum(domain_losses[target_part] * target_mask),
                    "domain_correct_target": jnp.sum(domain_hits[target_part] * target_mask),
                    "target_count": jnp.sum(target_mask),
                    "grl_coefficient": coefficient,
                }
            return loss, outputs

        (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        optimizer = optimizer_for(state.learning_rate, course)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = outputs | {
            "loss": loss,
            "source_count": jnp.sum(source_mask),
            "learning_rate": schedule_for(state.learning_rate, course)(state.step),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


# Epoch-level names written to metrics.jsonl, and how each is made from the step sums.
EPOCH_METRICS = (
    "learning_rate",
    "grl_coefficient",
    "class_loss",
    "source_accuracy",
    "domain_loss_source",
    "domain_loss_target",
    "domain_accuracy_source",
    "domain_accuracy_target",
)


def summarize_epoch(step_metrics: list[dict]) -> dict:
    """Reduces a list of per-step metric dicts on the device: one small result to fetch.

    Sums are divided by the number of real (unpadded) rows; the learning rate is the one at the
    epoch's first step (StepLR keeps it for the whole epoch), the reversal coefficient its mean over
    the epoch's steps; ``losses`` keeps every step's loss for divergence checks.
    """
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)
    totals = jax.tree.map(jnp.sum, stacked)
    source = totals["source_count"]
    summary = {
        "learning_rate": stacked["learning_rate"][0],
        "class_loss": totals["class_loss"] / source,
        "source_accuracy": totals["class_correct"] / source,
        "losses": stacked["loss"],
    }
    if "target_count" in totals:
        target = totals["target_count"]
        summary |= {
            "grl_coefficient": jnp.mean(stacked["grl_coefficient"]),
            "domain_loss_source": totals["domain_loss_source"] / source,
            "domain_loss_target": totals["domain_loss_target"] / target,
            "domain_accuracy_source": totals["domain_correct_source"] / source,
            "domain_accuracy_target": totals["domain_correct_target"] / target,
        }
    return summary


def make_eval_step(model: DANN, *, mean, std) -> Callable:
    """``eval_step(params, images, labels, mask) -> {"correct", "count", "predictions"}``."""

    def eval_step(params, images, labels, mask):
        logits = model.apply({"params": params}, normalize(images, mean, std), train=False)
        predictions = logits.argmax(-1)
        return {
            "correct": jnp.sum((predictions == labels) * mask),
            "count": jnp.sum(mask),
            "predictions": predictions,
        }

    return eval_step

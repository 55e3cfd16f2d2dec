"""The method interface: what a domain-adaptation method tells the rest of jaxdann.

A method is a class. It declares the parts it adds to backbone + classifier (``heads``), whether
its batches carry target images (``needs_target``), its loss and the names of its epoch metrics.
The train step, the loop, the sweep, the tables and the plots ask the method; none names one.

The loss is ``loss(params, model_state, batch, rng, progress) -> (loss, (sums, model_state))``:

- ``params``: ``{part: ...}`` (``features``, ``classifier``, the heads, ``bottleneck`` if any);
- ``model_state``: collections beyond parameters (``{"batch_stats": ...}``, or empty);
- ``batch``: ``source_images`` (uint8 NHWC), ``source_labels``, ``source_mask`` and, when
  ``needs_target``, ``target_images`` and ``target_mask`` (never target labels). A mask is 0
  for padding rows, which must not count;
- ``rng``: this step's key (already folded with the step number);
- ``progress``: ``{"step", "steps_per_epoch", "total_steps", "warmup_steps"}`` (int32 scalars,
  traced), for schedules such as the reversal ramp;
- ``sums``: per-step *sums* of the method's metrics (and the counts they divide by), which
  :meth:`Method.summarize` turns into epoch values, so padding never counts.

``update`` does one step with the loss's gradient; a multi-stage method (several updates over
different parameter groups per step) overrides ``init_optimizer`` and ``update`` and still runs
inside the one jitted step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdann.data.transforms import augment, normalize
from jaxdann.errors import ConfigError
from jaxdann.losses import mcc
from jaxdann.models.grl import grl_coefficient
from jaxdann.models.network import Network

__all__ = ["Method", "masked_mean", "per_example_loss", "reversal_coefficient"]


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of ``values`` over the rows where ``mask`` is 1."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _mcc_weight(config) -> float:
    """``method.mcc_weight`` (0 for a config without a ``method`` section)."""
    section = config.get("method") if hasattr(config, "get") else None
    return float(section.get("mcc_weight", 0.0)) if section is not None else 0.0


def reversal_coefficient(config, progress) -> jax.Array:
    """The gradient reversal coefficient at this step, from ``config.grl`` (DANN, CDAN, MDD)."""
    grl = config.grl
    return grl_coefficient(
        progress["step"],
        schedule=grl.schedule,
        maximum=float(grl.coefficient),
        gamma=float(grl.gamma),
        total_steps=progress["total_steps"],
        warmup_steps=progress["warmup_steps"],
    )


def require_reversal(config, label: str) -> None:
    """Refuse ``grl.objective`` other than ``reverse`` for a method that trains its features only
    through the reversal layer (CDAN, MDD): DANN's inverted-label objective has no meaning there."""
    if config.grl.objective != "reverse":
        raise ConfigError(
            f"config key grl.objective={config.grl.objective!r}: {label} trains "
            "through the reversal layer; use grl.objective=reverse."
        )


def joint_mask(batch: Mapping) -> jax.Array:
    """The row mask of ``concatenate([source, target])`` images: 1 for a real row, 0 for a
    padding row (the mask BatchNorm's statistics read; see ``Network.run``)."""
    return jnp.concatenate([batch["source_mask"], batch["target_mask"]])


def per_example_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per row (torch's ``cross_entropy(reduction="none")``)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class Method:
    """Source-only training, and the base every method extends.

    Class attributes a method sets: ``label`` (its name in tables and figures),
    ``needs_target``, ``epoch_metrics`` (the metric names of a ``metrics.jsonl`` row, in order;
    ``learning_rate`` is filled in by the train step; with ``method.mcc_weight > 0`` the
    instance's ``epoch_metrics`` add ``mcc_regularizer``). Methods override :meth:`heads`,
    :meth:`loss` and :meth:`summarize`, and where needed :meth:`head_inputs`,
    :meth:`init_params`, :meth:`describe`, :meth:`init_optimizer` and :meth:`update`.
    """

    label: ClassVar[str] = "source only"
    needs_target: ClassVar[bool] = False
    epoch_metrics: ClassVar[tuple[str, ...]] = ("learning_rate", "class_loss", "source_accuracy")

    #: Whether :meth:`loss` adds :meth:`target_regularizer` (``method.mcc_weight`` x MCC on
    #: its target logits). A method that does not refuses ``method.mcc_weight > 0``.
    adds_mcc_regularizer: ClassVar[bool] = False

    def __init__(self, config, network: Network, *, mean, std):
        self.config = config
        self.network = network
        self.mean, self.std = mean, std
        self.mcc_weight = _mcc_weight(config)
        if self.mcc_weight > 0:
            if not self.adds_mcc_regularizer:
                from jaxdann.methods import METHODS

                adding = [name for name in METHODS if METHODS[name].adds_mcc_regularizer]
                raise ConfigError(
                    f"config key method.mcc_weight={self.mcc_weight}: adaptation="
                    f"{config.adaptation!r} does not add the MCC regulariser; set "
                    f"method.mcc_weight=0 or use a method that adds it ({', '.join(adding)})."
                )
            # This run's rows also carry the regulariser (an instance attribute: the class's
            # metrics, which tables and figures read, stay as declared).
            self.epoch_metrics = (*type(self).epoch_metrics, "mcc_regularizer")

    # -- the parts -------------------------------------------------------------------------

    @classmethod
    def bottleneck_width(cls, config) -> int:
        """The width of the bottleneck between backbone and heads (0: none):
        ``model.bottleneck``, unless the method's definition includes one of its own."""
        return int(config.model.bottleneck)

    @classmethod
    def heads(cls, config, backbone, num_classes: int) -> dict[str, nn.Module]:
        """The parts this method adds, by name (``backbone`` is a ``models.Backbone``;
        ``num_classes`` the label classifier's output count)."""
        return {}

    @classmethod
    def head_inputs(cls, features: jax.Array, logits: jax.Array) -> Mapping[str, jax.Array]:
        """A sample input per head, for initialisation; a head not named here gets features."""
        return {}

    def init_params(self, params: dict) -> dict:
        """Adjusts freshly built parameters (after pretrained weights are in)."""
        return params

    # -- one step --------------------------------------------------------------------------

    def prepare(self, batch: Mapping, rng: jax.Array):
        """``(source images, target images or None, dropout key)``: augmented and normalised
        on the device, each domain with its own augmentation key."""
        dropout_rng, source_rng, target_rng = jax.random.split(rng, 3)
        source = self._images(batch["source_images"], source_rng)
        target = None
        if self.needs_target:
            target = self._images(batch["target_images"], target_rng)
        return source, target, dropout_rng

    def embed_both(self, params, model_state, source, target, batch, rng):
        """Features of the source and target rows in one pass, source first (TLlib's
        ``model(torch.cat((x_s, x_t)))``), padding rows out of BatchNorm's statistics:
        ``(features, model_state)``."""
        images = jnp.concatenate([source, target])
        return self.network.embed(
            params, model_state, images, train=True, rng=rng, mask=joint_mask(batch)
        )

    def _images(self, images, rng):
        flip, crop = bool(self.config.data.random_flip), bool(self.config.data.random_crop)
        if flip or crop:
            images = augment(images, rng, flip=flip, crop=crop)
        return normalize(images, self.mean, self.std)

    def classification(self, logits: jax.Array, batch: Mapping) -> tuple[jax.Array, dict]:
        """The class loss on the source rows (a mean over real rows) and its sums."""
        labels, mask = batch["source_labels"], batch["source_mask"]
        losses = per_example_loss(logits, labels)
        sums = {
            "class_loss": jnp.sum(losses * mask),
            "class_correct": jnp.sum((logits.argmax(-1) == labels) * mask),
            "source_count": jnp.sum(mask),
        }
        return masked_mean(losses, mask), sums

    def target_regularizer(self, target_logits: jax.Array, batch: Mapping):
        """``(term, sums)``: ``method.mcc_weight`` x MCC (Jin et al. 2020) on the target
        logits at ``method.temperature``, padding rows left out, for a method's loss to add;
        ``(0.0, {})`` when the weight is 0, so a run without it traces nothing more. The
        epoch value is the mean over steps of the unweighted MCC (``mcc_regularizer``)."""
        if self.mcc_weight <= 0:
            return 0.0, {}
        temperature = float(self.config.method.temperature)
        value = mcc(target_logits, temperature=temperature, mask=batch["target_mask"])
        return self.mcc_weight * value, {"mcc_regularizer": value}

    def loss(self, params, model_state, batch, rng, progress):
        source, _, dropout_rng = self.prepare(batch, rng)
        net = self.network
        mask = batch["source_mask"]
        features, model_state = net.embed(
            params, model_state, source, train=True, rng=dropout_rng, mask=mask
        )
        logits, model_state = net.run(
            params, model_state, "classifier", features, train=True, rng=dropout_rng, mask=mask
        )
        loss, sums = self.classification(logits, batch)
        return loss, (sums, model_state)

    def init_optimizer(self, optimizer: optax.GradientTransformation, params) -> Any:
        return optimizer.init(params)

    def update(self, state, batch, rng, progress, optimizer: optax.GradientTransformation):
        """One optimizer step on the loss's gradient: ``(state, sums)`` (``sums`` with
        ``loss``). ``state`` is a ``training.step.TrainState``; ``step`` is advanced by the
        caller."""
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (sums, model_state)), grads = grad_fn(
            state.params, state.model_state, batch, rng, progress
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(params=params, opt_state=opt_state, model_state=model_state)
        return state, sums | {"loss": loss}

    # -- an epoch --------------------------------------------------------------------------

    def summarize(self, totals: Mapping, stacked: Mapping) -> dict:
        """Epoch values from the sums over its steps (``totals``) and the per-step values
        (``stacked``); ``learning_rate`` is added by the caller."""
        source = totals["source_count"]
        summary = {
            "class_loss": totals["class_loss"] / source,
            "source_accuracy": totals["class_correct"] / source,
        }
        if self.mcc_weight > 0:
            summary["mcc_regularizer"] = jnp.mean(stacked["mcc_regularizer"])
        return summary

    def describe(self, row: Mapping) -> str:
        """The method's part of the one-line epoch log."""
        return f"class loss {row['class_loss']:.4f} acc {row['source_accuracy']:.4f}"

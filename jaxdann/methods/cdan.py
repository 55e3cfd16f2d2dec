"""CDAN and CDAN+E (Long et al. 2018, "Conditional Adversarial Domain Adaptation").

A domain discriminator reads the multilinear map ``g (x) f`` of each row's features ``f`` and
softmax predictions ``g`` (detached, as TLlib's ``ConditionalDomainAdversarialLoss``), so it
can tell the domains apart per class; the features learn to fool it through the gradient
reversal layer. With ``method.randomized=auto`` the map is the randomized one of width
``method.randomized_dim`` above 4096 map dimensions (features x classes; the paper's Sec. 3.2),
``always`` uses it at any width (TLlib's ``--randomized``), ``never`` keeps the full map.

Loss = class loss + ``method.trade_off`` x transfer loss, the transfer loss the discriminator's
binary cross-entropy (source label 1, target 0, as TLlib) averaged over the real source and
target rows together; CDAN+E weights each row by ``1 + exp(-H(g))`` normalised to sum to the
real row count (the paper's entropy conditioning, TLlib's ``entropy_conditioning=True``).

Where this differs from TLlib:

- the map is randomized above 4096 dimensions by default, where TLlib's example keeps the full
  map unless ``--randomized`` is given (``method.randomized=never`` is TLlib's default: e.g.
  TLlib's Office-31 runs, 256 bottleneck features x 31 classes, use the full 7936-wide map);
- the reversal coefficient follows ``config.grl`` (schedule, maximum, warm-up) as DANN's does,
  not TLlib's ``WarmStartGradientReverseLayer`` (``2 / (1 + exp(-i / 1000)) - 1``: 0.46 at
  iteration 1000, 0.91 at 3000, approaching 1 over about 5000 iterations);
- the reversal is applied to the features before the map, not to the map's output: the map is
  linear in the features for fixed (detached) predictions, so the gradient is the same;
- the cross-entropy is computed from the logit (log-sigmoid), not torch's clamped
  ``binary_cross_entropy`` of a sigmoid output: equal except at saturated logits;
- padding rows (mask 0; TLlib's batches have none) count in no mean, get no entropy weight and
  stay out of the discriminator's BatchNorm statistics.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdann.errors import ConfigError
from jaxdann.losses import (
    RANDOMIZE_ABOVE,
    entropy_weights,
    multilinear_map,
    randomized_map_matrices,
    randomized_multilinear_map,
)
from jaxdann.methods.base import Method, joint_mask, require_reversal, reversal_coefficient
from jaxdann.models.grl import reverse_gradient
from jaxdann.models.heads import BatchNorm
from jaxdann.models.layers import Dtype, compute_dtype, dense

__all__ = [
    "CDAN",
    "CDANE",
    "ConditionalDiscriminator",
    "conditional_map",
    "uses_randomized_map",
]


def _map_matrices(seed: int, features_dim: int, num_classes: int, randomized_dim: int):
    """:func:`randomized_map_matrices` of ``seed`` as numpy arrays, drawn now even while a step
    is being traced (so they are constants of the compiled step)."""
    with jax.ensure_compile_time_eval():
        matrices = randomized_map_matrices(
            jax.random.key(seed), features_dim, num_classes, randomized_dim
        )
    return tuple(np.asarray(matrix) for matrix in matrices)


def uses_randomized_map(randomized: str, features_dim: int, num_classes: int) -> bool:
    """Whether ``method.randomized`` (auto, always, never) calls for the randomized map."""
    if randomized == "auto":
        return features_dim * num_classes > RANDOMIZE_ABOVE
    return randomized == "always"


def conditional_map(
    features: jax.Array,
    probabilities: jax.Array,
    *,
    randomized_dim: int,
    seed: int,
    randomized: str = "auto",
) -> jax.Array:
    """The discriminator's input: the multilinear map, or the randomized map where
    :func:`uses_randomized_map` says so. The randomized map's matrices are those ``seed`` draws,
    the same at every step and after a resume (no state to checkpoint); drawn when the step is
    traced, they enter the compiled step as constants: drawing them inside it (threefry over
    0.8 M numbers for the demo's CNN) was about a fifth of the small CNN's CDAN step on a CPU."""
    features_dim, num_classes = features.shape[-1], probabilities.shape[-1]
    if not uses_randomized_map(randomized, features_dim, num_classes):
        return multilinear_map(features.astype(jnp.float32), probabilities)
    matrices = _map_matrices(seed, features_dim, num_classes, randomized_dim)
    return randomized_multilinear_map(features, probabilities, *matrices)


class ConditionalDiscriminator(nn.Module):
    """The conditional map, then TLlib's ``DomainDiscriminator`` with batch norm:
    ``[Linear(hidden) -> BatchNorm -> ReLU] x 2 -> Linear(1)``, one logit per row (the sigmoid
    is in the loss). Its input is the pair ``(features, detached probabilities)``, so the first
    layer is initialised with the map's width whichever map the shapes call for.

    The randomized map's matrices come from ``map_seed``, the same for every run (TLlib draws
    them from the run's seed): the train step reads no seed, so runs that differ only in
    ``seed`` still share one compiled step.
    """

    hidden: int
    randomized_dim: int
    randomized: str = "auto"
    map_seed: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: tuple[jax.Array, jax.Array], train: bool = False) -> jax.Array:
        features, probabilities = inputs
        mapped = conditional_map(
            features,
            probabilities,
            randomized_dim=self.randomized_dim,
            seed=self.map_seed,
            randomized=self.randomized,
        )
        x = mapped.astype(self.dtype)
        for index in range(2):
            x = dense(x, self.hidden, f"hidden_{index}", self.dtype)
            x = nn.relu(BatchNorm(name=f"norm_{index}")(x, train))
        return dense(x, 1, "output", self.dtype)[:, 0].astype(jnp.float32)


def _positive_int(config, key: str) -> int:
    value = int(config.method[key])
    if value <= 0:
        raise ConfigError(f"config key method.{key}={value}: use a positive width.")
    return value


class CDAN(Method):
    """CDAN: the conditional domain discriminator, unweighted."""

    label = "CDAN"
    needs_target = True
    adds_mcc_regularizer = True
    entropy_conditioning = False
    epoch_metrics = (
        "learning_rate",
        "grl_coefficient",
        "class_loss",
        "source_accuracy",
        "transfer_loss",
        "domain_accuracy",
    )

    def __init__(self, config, network, *, mean, std):
        super().__init__(config, network, mean=mean, std=std)
        require_reversal(config, self.label)
        self.trade_off = float(config.method.trade_off)

    @classmethod
    def heads(cls, config, backbone, num_classes):
        discriminator = ConditionalDiscriminator(
            hidden=_positive_int(config, "discriminator_hidden"),
            randomized_dim=_positive_int(config, "randomized_dim"),
            randomized=config.method.randomized,
            dtype=compute_dtype(config),
        )
        return {"domain_discriminator": discriminator}

    @classmethod
    def head_inputs(cls, features, logits):
        return {"domain_discriminator": (features, jax.nn.softmax(logits))}

    def loss(self, params, model_state, batch, rng, progress):
        source, target, dropout_rng = self.prepare(batch, rng)
        coefficient = reversal_coefficient(self.config, progress)
        num_source = source.shape[0]
        net = self.network

        rows = joint_mask(batch)

        def run(part, x):
            nonlocal model_state
            y, model_state = net.run(
                params, model_state, part, x, train=True, rng=dropout_rng, mask=rows
            )
            return y

        features, model_state = self.embed_both(
            params, model_state, source, target, batch, dropout_rng
        )
        logits = run("classifier", features)
        loss, sums = self.classification(logits[:num_source], batch)
        probabilities = jax.lax.stop_gradient(jax.nn.softmax(logits.astype(jnp.float32)))
        reversed_features = reverse_gradient(features, coefficient)
        domain_logits = run("domain_discriminator", (reversed_features, probabilities))

        mask = rows.astype(jnp.float32)
        labels = jnp.concatenate(
            [jnp.ones(num_source, jnp.float32), jnp.zeros(target.shape[0], jnp.float32)]
        )
        weights = mask
        if self.entropy_conditioning:
            weights = entropy_weights(probabilities, mask=mask)
        per_row = optax.sigmoid_binary_cross_entropy(domain_logits, labels)
        count = jnp.sum(mask)
        transfer = jnp.sum(per_row * weights) / jnp.maximum(count, 1.0)
        regularizer, regularizer_sums = self.target_regularizer(logits[num_source:], batch)
        loss = loss + self.trade_off * transfer + regularizer
        hits = (domain_logits >= 0).astype(jnp.float32) == labels
        sums |= regularizer_sums | {
            "transfer_loss": jnp.sum(per_row * weights),
            "domain_correct": jnp.sum(hits * mask),
            "domain_count": count,
            "grl_coefficient": coefficient,
        }
        return loss, (sums, model_state)

    def summarize(self, totals, stacked):
        count = totals["domain_count"]
        return super().summarize(totals, stacked) | {
            "grl_coefficient": jnp.mean(stacked["grl_coefficient"]),
            "transfer_loss": totals["transfer_loss"] / count,
            "domain_accuracy": totals["domain_correct"] / count,
        }

    def describe(self, row):
        return super().describe(row) + (
            f"  transfer loss {row['transfer_loss']:.4f} domain acc {row['domain_accuracy']:.3f}"
            f"  grl {row['grl_coefficient']:.3f}"
        )


class CDANE(CDAN):
    """CDAN+E: each row's discriminator loss weighted by its prediction's certainty."""

    label = "CDAN+E"
    entropy_conditioning = True

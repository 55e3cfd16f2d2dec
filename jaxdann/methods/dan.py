"""DAN (Long et al. 2015, "Learning Transferable Features with Deep Adaptation Networks").

Loss = class loss + ``method.trade_off`` x MK-MMD^2 between the source and the target features
(the network's features: the backbone's output, through the bottleneck if there is one, as
TLlib's DAN adapts its bottleneck's output). The kernel is a sum of Gaussians whose bandwidths
are ``method.kernel_alphas`` x the batch's mean squared pairwise distance (TLlib: 2^-3 .. 2^1);
``method.linear_mmd`` picks the linear-time estimate over the unbiased quadratic one
(:func:`jaxdann.losses.mk_mmd`).

Where this differs from TLlib: TLlib's DAN example defaults to the linear estimate
(``--non-linear`` turns it off); here ``method.linear_mmd`` defaults to false, the paper's
unbiased estimate. The paper adapts several fully connected layers (fc6-fc8); like TLlib this
adapts one feature layer. Masks: padding rows are left out of the bandwidth and of every
pair average.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdann.errors import ConfigError
from jaxdann.losses import mk_mmd
from jaxdann.methods.base import Method, joint_mask

__all__ = ["DAN", "kernel_alphas", "source_and_target_pass"]


def kernel_alphas(config) -> tuple[float, ...]:
    """``method.kernel_alphas``: positive, comma-separated bandwidth factors."""
    text = str(config.method.kernel_alphas)
    try:
        alphas = tuple(float(alpha) for alpha in text.split(",") if alpha.strip())
    except ValueError:
        alphas = ()
    if not alphas or min(alphas) <= 0:
        raise ConfigError(
            f"config key method.kernel_alphas={text!r}: use positive comma-separated factors "
            "such as '0.125,0.25,0.5,1,2'."
        )
    return alphas


def source_and_target_pass(method: Method, params, model_state, batch, rng):
    """One pass over source + target rows: ``(features, logits, model_state, num_source)``,
    the classifier on every row (as TLlib's examples, which classify the concatenated batch)."""
    source, target, dropout_rng = method.prepare(batch, rng)
    features, model_state = method.embed_both(
        params, model_state, source, target, batch, dropout_rng
    )
    logits, model_state = method.network.run(
        params,
        model_state,
        "classifier",
        features,
        train=True,
        rng=dropout_rng,
        mask=joint_mask(batch),
    )
    return features, logits, model_state, source.shape[0]


class DAN(Method):
    """DAN: multi-kernel MMD between the domains' features."""

    label = "DAN"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = ("learning_rate", "class_loss", "source_accuracy", "mmd")
    metric = "mmd"  # the discrepancy's name in the epoch rows

    def __init__(self, config, network, *, mean, std):
        super().__init__(config, network, mean=mean, std=std)
        self.trade_off = float(config.method.trade_off)
        self.kernel_alphas = kernel_alphas(config)
        self.linear = bool(config.method.linear_mmd)

    def discrepancy(self, features, logits, batch, num_source):
        """The method's MMD on this batch's rows."""
        return mk_mmd(
            features[:num_source],
            features[num_source:],
            kernel_alphas=self.kernel_alphas,
            linear=self.linear,
            source_mask=batch["source_mask"],
            target_mask=batch["target_mask"],
        )

    def loss(self, params, model_state, batch, rng, progress):
        features, logits, model_state, num_source = source_and_target_pass(
            self, params, model_state, batch, rng
        )
        loss, sums = self.classification(logits[:num_source], batch)
        discrepancy = self.discrepancy(features, logits, batch, num_source)
        regularizer, regularizer_sums = self.target_regularizer(logits[num_source:], batch)
        loss = loss + self.trade_off * discrepancy + regularizer
        return loss, (sums | regularizer_sums | {self.metric: discrepancy}, model_state)

    def summarize(self, totals, stacked):
        """The discrepancy is a statistic of a whole batch: its epoch value is the mean over
        the epoch's steps."""
        return super().summarize(totals, stacked) | {self.metric: jnp.mean(stacked[self.metric])}

    def describe(self, row):
        return super().describe(row) + f"  {self.metric} {row[self.metric]:.4f}"

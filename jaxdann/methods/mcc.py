"""MCC (Jin et al. 2020, "Minimum Class Confusion for Versatile Domain Adaptation").

Loss = class loss + ``method.trade_off`` x MCC on the target logits at
``method.temperature`` (:func:`jaxdann.losses.mcc`): the off-diagonal mass of the
entropy-weighted, normalised class confusion matrix of the target predictions, which pushes
the classifier to stop confusing classes on the target domain. Padding rows add nothing.

The same loss is a regulariser other methods add with ``method.mcc_weight > 0``
(:meth:`jaxdann.methods.base.Method.target_regularizer`); here it is the method itself, so
TLlib's ``--trade-off`` is ``method.trade_off``.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdann.errors import ConfigError
from jaxdann.losses import mcc
from jaxdann.methods.base import Method
from jaxdann.methods.dan import source_and_target_pass

__all__ = ["MCC"]


class MCC(Method):
    """MCC: minimum class confusion on the target predictions."""

    label = "MCC"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = ("learning_rate", "class_loss", "source_accuracy", "mcc")

    def __init__(self, config, network, *, mean, std):
        super().__init__(config, network, mean=mean, std=std)
        self.trade_off = float(config.method.trade_off)
        self.temperature = float(config.method.temperature)
        if self.temperature <= 0:
            raise ConfigError(
                f"config key method.temperature={self.temperature}: use a positive temperature."
            )

    def loss(self, params, model_state, batch, rng, progress):
        _, logits, model_state, num_source = source_and_target_pass(
            self, params, model_state, batch, rng
        )
        loss, sums = self.classification(logits[:num_source], batch)
        target_logits = logits[num_source:]
        confusion = mcc(target_logits, temperature=self.temperature, mask=batch["target_mask"])
        regularizer, regularizer_sums = self.target_regularizer(target_logits, batch)
        loss = loss + self.trade_off * confusion + regularizer
        return loss, (sums | regularizer_sums | {"mcc": confusion}, model_state)

    def summarize(self, totals, stacked):
        """MCC is a statistic of a whole batch: its epoch value is the mean over steps."""
        return super().summarize(totals, stacked) | {"mcc": jnp.mean(stacked["mcc"])}

    def describe(self, row):
        return super().describe(row) + f"  mcc {row['mcc']:.4f}"

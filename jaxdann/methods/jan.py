"""JAN (Long et al. 2017, "Deep Transfer Learning with Joint Adaptation Networks").

Loss = class loss + ``method.trade_off`` x JMMD^2 over the joint distribution of the features
and the softmax predictions: the kernel is the product of a multi-kernel Gaussian sum on the
features (bandwidths ``method.kernel_alphas`` x the mean squared distance, as DAN) and one
Gaussian of fixed bandwidth 0.92 on the predictions (TLlib's JAN example), estimated as
``method.linear_mmd`` says (:func:`jaxdann.losses.jmmd`). The gradient flows through both
layers, the predictions included (TLlib does not detach them).

Where this differs from TLlib: no adversarial ``Theta`` layers (JAN-A; TLlib's
``--adversarial``, off by default), and ``method.linear_mmd`` defaults to false (TLlib's
example: ``--linear``, also off by default). Masks as DAN's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdann.losses import jmmd
from jaxdann.methods.dan import DAN

__all__ = ["JAN"]


class JAN(DAN):
    """JAN: joint MMD of the features and the predictions."""

    label = "JAN"
    epoch_metrics = ("learning_rate", "class_loss", "source_accuracy", "jmmd")
    metric = "jmmd"

    def discrepancy(self, features, logits, batch, num_source):
        probabilities = jax.nn.softmax(logits.astype(jnp.float32))
        return jmmd(
            [features[:num_source], probabilities[:num_source]],
            [features[num_source:], probabilities[num_source:]],
            kernel_alphas=self.kernel_alphas,
            linear=self.linear,
            source_mask=batch["source_mask"],
            target_mask=batch["target_mask"],
        )

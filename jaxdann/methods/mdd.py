"""MDD (Zhang et al. 2019, "Bridging Theory and Algorithm for Domain Adaptation").

An adversarial classifier (``adversarial_classifier``: same classes as the label classifier,
one hidden layer of ``method.adversarial_hidden`` units, TLlib's ``width``) reads the features
through the gradient reversal layer. With ``h`` the label classifier's predictions (argmax: no
gradient), the margin disparity discrepancy (:func:`jaxdann.losses.mdd`, margin
``method.margin``) is ``D = -margin x CE_source(adv, h) + mean_target log(1 - p_adv[h])``.
Loss = class loss + ``method.trade_off`` x transfer loss, transfer loss = ``-D`` (TLlib's
``transfer_loss = -mdd(...)``): the adversarial head descends ``-D`` (it agrees with ``h`` on
source and disagrees on target, i.e. ascends the discrepancy); through the reversal the features
get ``-coefficient`` x that gradient, so they descend ``D``. The label classifier hears only the
class loss. One feature pass over source + target rows, as TLlib's example.

The reversal coefficient follows ``grl.*`` as DANN's does (``grl.schedule``, ``grl.coefficient``,
``grl.gamma``, ``grl.warmup_epochs``).

Where this differs from TLlib (tllib/alignment/mdd.py, examples/.../mdd.py):

- TLlib's reversal is ``WarmStartGradientReverseLayer(alpha=1, lo=0, hi=0.1, max_iters=1000)``,
  ``0.1 x (2 / (1 + exp(-i / 1000)) - 1)``: 0.046 at iteration 1000, approaching 0.1 over about
  5000 iterations; here it is ``grl.*`` (the DANN ramp over the run with ``grl.gamma``, or a
  constant);
- the adversarial head is ``MLPHead((adversarial_hidden,), classes)`` with ``model.dropout_rate``:
  Dropout-Linear-ReLU-Linear with torch's default init, where TLlib's is Linear-ReLU-Dropout(0.5)
  -Linear with N(0, 0.01) weights and zero biases; TLlib's MDD model also has a
  Linear-BN-ReLU-Dropout bottleneck (here ``model.bottleneck``, without the dropout, off by
  default) and a main head with a hidden layer of the same width (here the backbone's
  classifier);
- the source and target terms of ``D`` are each a mean over their real rows (padding excluded);
- the epoch's ``transfer_loss`` is the mean of the steps' values.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdann.losses import mdd
from jaxdann.methods.base import Method, joint_mask, require_reversal, reversal_coefficient
from jaxdann.models.grl import reverse_gradient
from jaxdann.models.heads import MLPHead
from jaxdann.models.layers import compute_dtype

__all__ = ["MDD"]


class MDD(Method):
    label = "MDD"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = (
        "learning_rate",
        "grl_coefficient",
        "class_loss",
        "source_accuracy",
        "transfer_loss",
    )

    def __init__(self, config, network, *, mean, std):
        super().__init__(config, network, mean=mean, std=std)
        require_reversal(config, self.label)

    @classmethod
    def heads(cls, config, backbone, num_classes):
        hidden = (int(config.method.adversarial_hidden),)
        rate = float(config.model.dropout_rate)
        dtype = compute_dtype(config)
        return {"adversarial_classifier": MLPHead(hidden, num_classes, rate, dtype)}

    def coefficient(self, progress):
        """The reversal coefficient at this step (``grl.*``)."""
        return reversal_coefficient(self.config, progress)

    def loss(self, params, model_state, batch, rng, progress):
        source, target, key = self.prepare(batch, rng)
        coefficient = self.coefficient(progress)
        count = source.shape[0]
        net, mask = self.network, joint_mask(batch)
        features, model_state = self.embed_both(params, model_state, source, target, batch, key)
        logits, model_state = net.run(
            params, model_state, "classifier", features, train=True, rng=key, mask=mask
        )
        reversed_features = reverse_gradient(features, coefficient)
        adversarial, model_state = net.run(
            params,
            model_state,
            "adversarial_classifier",
            reversed_features,
            train=True,
            rng=key,
            mask=mask,
        )
        loss, sums = self.classification(logits[:count], batch)
        discrepancy = mdd(
            logits[:count],
            adversarial[:count],
            logits[count:],
            adversarial[count:],
            margin=float(self.config.method.margin),
            source_mask=batch["source_mask"],
            target_mask=batch["target_mask"],
        )
        transfer_loss = -discrepancy
        regularizer, regularizer_sums = self.target_regularizer(logits[count:], batch)
        loss = loss + float(self.config.method.trade_off) * transfer_loss + regularizer
        sums |= regularizer_sums | {"transfer_loss": transfer_loss, "grl_coefficient": coefficient}
        return loss, (sums, model_state)

    def summarize(self, totals, stacked):
        return super().summarize(totals, stacked) | {
            "grl_coefficient": jnp.mean(stacked["grl_coefficient"]),
            "transfer_loss": jnp.mean(stacked["transfer_loss"]),
        }

    def describe(self, row):
        return super().describe(row) + (
            f"  transfer loss {row['transfer_loss']:.4f}  grl {row['grl_coefficient']:.3f}"
        )

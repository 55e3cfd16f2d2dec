"""AFN, stepwise (Xu et al. 2019, "Larger Norm More Transferable: An Adaptive Feature Norm
Approach for Unsupervised Domain Adaptation").

Loss = class loss + ``method.afn_weight`` x (norm loss on source + norm loss on target), the
norm loss :func:`jaxdann.losses.afn_norm_loss` with step ``method.delta``: each row's feature
norm is pulled towards its own value (without gradient) + delta, so every step enlarges the
norms of both domains a little (the paper's SAFN; its value is always delta^2 per domain, only
its gradient matters). TLlib's defaults: ``trade_off_norm`` 0.05, ``delta`` 1.

Source and target take separate passes through the network, as in TLlib's example (a
bottleneck's BatchNorm then normalises each domain with its own batch statistics).

Dropout as in the paper: the features the norm loss reads go through the paper's L2-preserved
dropout (mask / sqrt(1 - p), so a row's expected squared norm is unchanged) at rate
``model.dropout_rate`` (none at 0, the demo's). The label classifier reads the features as in
every jaxdann method, with its own (inverted) dropout at that rate before each hidden layer.

Where this differs from TLlib (tllib/normalization/afn.py, examples/.../afn.py):

- TLlib's features are a bottleneck block, Linear(1000)-BN-ReLU-Dropout(0.5) with the L2-
  preserved scaling, which both the norm loss and the one-layer head read (the same mask).
  Here AFN always has a bottleneck too, Linear-BN-ReLU of width ``model.bottleneck`` or, where
  that is 0, ``method.afn_bottleneck`` (1000; on raw CNN features the norm grew without bound
  and the demo diverged); the norm loss reads its output through its own L2-preserved dropout
  mask and the classifier through its own dropout, so the two see different masks;
- no optional entropy term on target (TLlib's ``--trade-off-entropy``, off by default);
- the norm terms are means over real rows only (padding excluded);
- the epoch's ``norm_loss`` is the mean of the steps' values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdann.losses import afn_norm_loss
from jaxdann.methods.base import Method

__all__ = ["AFN", "l2_preserved_dropout"]


def l2_preserved_dropout(features: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Dropout scaled by ``1 / sqrt(1 - rate)`` (AFN's L2-preserved dropout), not ``1 / (1 -
    rate)``: the expected squared L2 norm of a row is kept, which the norm loss reads."""
    if rate <= 0:
        return features
    keep = jax.random.bernoulli(key, 1.0 - rate, features.shape)
    return jnp.where(keep, features / jnp.sqrt(1.0 - rate), 0).astype(features.dtype)


class AFN(Method):
    label = "AFN"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = (
        "learning_rate",
        "class_loss",
        "source_accuracy",
        "norm_loss",
        "feature_norm_source",
        "feature_norm_target",
    )

    @classmethod
    def bottleneck_width(cls, config) -> int:
        """``model.bottleneck``, else ``method.afn_bottleneck``: AFN's features are always a
        bottleneck's (TLlib: 1000 wide); on raw CNN features the norm grows without bound."""
        return int(config.model.bottleneck) or int(config.method.afn_bottleneck)

    def loss(self, params, model_state, batch, rng, progress):
        source, target, key = self.prepare(batch, rng)
        source_key, target_key, source_drop, target_drop = jax.random.split(key, 4)
        net = self.network
        source_mask, target_mask = batch["source_mask"], batch["target_mask"]
        source_features, model_state = net.embed(
            params, model_state, source, train=True, rng=source_key, mask=source_mask
        )
        logits, model_state = net.run(
            params,
            model_state,
            "classifier",
            source_features,
            train=True,
            rng=source_key,
            mask=source_mask,
        )
        target_features, model_state = net.embed(
            params, model_state, target, train=True, rng=target_key, mask=target_mask
        )
        loss, sums = self.classification(logits, batch)
        if self.mcc_weight > 0:  # the regulariser reads the target's logits
            target_logits, model_state = net.run(
                params,
                model_state,
                "classifier",
                target_features,
                train=True,
                rng=target_key,
                mask=target_mask,
            )
            regularizer, regularizer_sums = self.target_regularizer(target_logits, batch)
            loss, sums = loss + regularizer, sums | regularizer_sums

        rate, delta = float(self.config.model.dropout_rate), float(self.config.method.delta)
        norm_loss = 0.0
        for domain, features, drop_key in (
            ("source", source_features, source_drop),
            ("target", target_features, target_drop),
        ):
            features = l2_preserved_dropout(features, rate, drop_key)
            mask = batch[f"{domain}_mask"]
            norm_loss = norm_loss + afn_norm_loss(features, delta=delta, mask=mask)
            norms = jnp.linalg.norm(jax.lax.stop_gradient(features).astype(jnp.float32), axis=-1)
            sums[f"feature_norm_{domain}"] = jnp.sum(norms * mask)
        loss = loss + float(self.config.method.afn_weight) * norm_loss
        sums |= {"norm_loss": norm_loss, "target_count": jnp.sum(batch["target_mask"])}
        return loss, (sums, model_state)

    def summarize(self, totals, stacked):
        return super().summarize(totals, stacked) | {
            "norm_loss": jnp.mean(stacked["norm_loss"]),
            "feature_norm_source": totals["feature_norm_source"] / totals["source_count"],
            "feature_norm_target": totals["feature_norm_target"] / totals["target_count"],
        }

    def describe(self, row):
        return super().describe(row) + (
            f"  norm loss {row['norm_loss']:.4f}  feature norm src "
            f"{row['feature_norm_source']:.2f} tgt {row['feature_norm_target']:.2f}"
        )

"""DANN (Ganin & Lempitsky 2015): a domain classifier the features learn to fool.

One feature pass over source + target rows; the label classifier reads the source rows, the
domain classifier all rows (source label 0, target label 1). Loss = class loss +
``domain_loss_weight`` x (domain loss on source + domain loss on target), the two domain losses
each a mean over their domain's rows, as the seed study's three backward passes sum them.

How the features fight the domain classifier (``grl.objective``):

- ``reverse``: through the gradient reversal layer, scaled by the coefficient (``grl.*``);
- ``inverted_labels``: the domain classifier learns on frozen features; the features learn,
  through a frozen copy of it, to make it predict the other domain (Tzeng et al. 2017), weighted
  by the coefficient. Both passes use the same dropout key, so they see the same masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdann.errors import ConfigError
from jaxdann.methods.base import (
    Method,
    joint_mask,
    masked_mean,
    per_example_loss,
    reversal_coefficient,
)
from jaxdann.models.grl import reverse_gradient
from jaxdann.models.heads import MLPHead
from jaxdann.models.layers import compute_dtype

__all__ = ["DANN", "domain_hidden"]


def domain_hidden(config, backbone) -> tuple[int, ...]:
    """``model.domain_hidden``: ``classifier`` (the label classifier's widths) or widths."""
    text = str(config.model.domain_hidden)
    if text == "classifier":
        return tuple(backbone.classifier_hidden)
    try:
        return tuple(int(width) for width in text.split(",") if width)
    except ValueError:
        raise ConfigError(
            f"config key model.domain_hidden={text!r}: use 'classifier' or comma-separated "
            "widths such as '1024,1024'."
        ) from None


class DANN(Method):
    label = "DANN"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = (
        "learning_rate",
        "grl_coefficient",
        "class_loss",
        "source_accuracy",
        "domain_loss_source",
        "domain_loss_target",
        "domain_accuracy_source",
        "domain_accuracy_target",
    )

    @classmethod
    def heads(cls, config, backbone, num_classes):
        hidden = domain_hidden(config, backbone)
        rate = float(config.model.dropout_rate)
        return {"domain_classifier": MLPHead(hidden, 2, rate, compute_dtype(config))}

    def init_params(self, params):
        """With ``model.domain_init_from_classifier``, the domain classifier's hidden layers
        start as copies of the label classifier's (the seed study does this)."""
        if not self.config.model.domain_init_from_classifier:
            return params
        domain = dict(params["domain_classifier"])
        for layer, value in params["classifier"].items():
            if layer == "output":
                continue
            same = jax.tree.map(jnp.shape, value) == jax.tree.map(jnp.shape, domain.get(layer))
            if not same:
                raise ConfigError(
                    "model.domain_init_from_classifier=true needs the domain classifier's "
                    "hidden layers to match the classifier's; set model.domain_hidden="
                    "classifier or model.domain_init_from_classifier=false."
                )
            # Copies, not views: the train step donates its state, leaf by leaf.
            domain[layer] = jax.tree.map(jnp.array, value)
        return {**params, "domain_classifier": domain}

    def coefficient(self, progress):
        """The reversal coefficient at this step (``grl.*``)."""
        return reversal_coefficient(self.config, progress)

    def loss(self, params, model_state, batch, rng, progress):
        source, target, dropout_rng = self.prepare(batch, rng)
        coefficient = self.coefficient(progress)
        num_source = source.shape[0]
        net = self.network

        mask = joint_mask(batch)

        def run(part, x, params=params):
            nonlocal model_state
            y, model_state = net.run(
                params, model_state, part, x, train=True, rng=dropout_rng, mask=mask
            )
            return y

        features, model_state = self.embed_both(
            params, model_state, source, target, batch, dropout_rng
        )
        if self.mcc_weight > 0:  # the regulariser reads the target's logits too
            class_logits = run("classifier", features)
            class_logits, target_logits = class_logits[:num_source], class_logits[num_source:]
        else:
            class_logits = run("classifier", features[:num_source])
        inverted = self.config.grl.objective == "inverted_labels"
        if inverted:
            domain_logits = run("domain_classifier", jax.lax.stop_gradient(features))
            frozen = params | {
                "domain_classifier": jax.lax.stop_gradient(params["domain_classifier"])
            }
            fooled_logits = run("domain_classifier", features, frozen)
        else:
            domain_logits = run("domain_classifier", reverse_gradient(features, coefficient))
        loss, sums = self.classification(class_logits, batch)

        source_mask, target_mask = batch["source_mask"], batch["target_mask"]
        domain_labels = jnp.concatenate(
            [jnp.zeros(num_source, jnp.int32), jnp.ones(target_mask.shape[0], jnp.int32)]
        )
        domain_losses = per_example_loss(domain_logits, domain_labels)
        domain_hits = domain_logits.argmax(-1) == domain_labels
        source_part, target_part = slice(0, num_source), slice(num_source, None)
        loss_source = masked_mean(domain_losses[source_part], source_mask)
        loss_target = masked_mean(domain_losses[target_part], target_mask)
        weight = float(self.config.domain_loss_weight)
        loss = loss + weight * (loss_source + loss_target)
        if inverted:
            swapped = per_example_loss(fooled_logits, 1 - domain_labels)
            fooling_loss = masked_mean(swapped[source_part], source_mask)
            fooling_loss += masked_mean(swapped[target_part], target_mask)
            loss = loss + weight * coefficient * fooling_loss
        if self.mcc_weight > 0:
            regularizer, regularizer_sums = self.target_regularizer(target_logits, batch)
            loss, sums = loss + regularizer, sums | regularizer_sums
        sums |= {
            "domain_loss_source": jnp.sum(domain_losses[source_part] * source_mask),
            "domain_correct_source": jnp.sum(domain_hits[source_part] * source_mask),
            "domain_loss_target": jnp.sum(domain_losses[target_part] * target_mask),
            "domain_correct_target": jnp.sum(domain_hits[target_part] * target_mask),
            "target_count": jnp.sum(target_mask),
            "grl_coefficient": coefficient,
        }
        return loss, (sums, model_state)

    def summarize(self, totals, stacked):
        source, target = totals["source_count"], totals["target_count"]
        return super().summarize(totals, stacked) | {
            "grl_coefficient": jnp.mean(stacked["grl_coefficient"]),
            "domain_loss_source": totals["domain_loss_source"] / source,
            "domain_loss_target": totals["domain_loss_target"] / target,
            "domain_accuracy_source": totals["domain_correct_source"] / source,
            "domain_accuracy_target": totals["domain_correct_target"] / target,
        }

    def describe(self, row):
        return super().describe(row) + (
            f"  domain loss src {row['domain_loss_source']:.4f} tgt {row['domain_loss_target']:.4f}"
            f" acc src {row['domain_accuracy_source']:.3f} tgt {row['domain_accuracy_target']:.3f}"
            f"  grl {row['grl_coefficient']:.3f}"
        )

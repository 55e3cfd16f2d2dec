"""MCD (Saito et al. 2018, "Maximum Classifier Discrepancy for Unsupervised Domain Adaptation").

Two label classifiers, ``classifier`` and ``classifier_2``, read the same features. Every train
step runs the paper's three stages, each a separate gradient computation and optimizer update,
all inside the one jitted step:

A. features + both classifiers descend the source class loss (the two cross-entropies summed);
B. the classifiers alone descend ``class loss - trade_off x discrepancy``: they keep the source
   right while disagreeing on target (the features are held fixed: not differentiated);
C. the features alone descend ``trade_off x discrepancy``, ``method.num_k`` times (TLlib's
   ``--num-k``, default 4), each on a fresh forward pass. The loop is unrolled over the static
   ``num_k``: as a ``jax.lax.fori_loop`` the step ran 20x slower on the CPU (13 s against
   0.67 s per step, the demo's small CNN, batch 64: XLA's CPU convolutions inside a while loop).

The discrepancy is :func:`jaxdann.losses.classifier_discrepancy` of the two softmax outputs on
the target rows (the mean absolute difference), a mean over real rows. Every stage runs its own
forward pass over source + target rows (as TLlib's ``G(x)`` on the concatenated batch) with its
own dropout key, and a bottleneck's BatchNorm statistics advance on each pass, as torch's do in
train mode.

Parameter groups and their optimizer states (``init_optimizer``): ``"features"`` (the backbone
and the bottleneck, if any: TLlib's G) and ``"classifiers"`` (both classifiers: TLlib's F1 +
F2, one optimizer as there), both from the config's optimizer. Each update's learning rate is
the schedule's value at the train step, however many updates the step makes (torch's scheduler
is stepped per iteration, not per ``optimizer.step()``); Adam's bias-correction count does
advance with every update, as torch's does.

Where this differs from TLlib (examples/domain_adaptation/image_classification/mcd.py,
tllib/alignment/mcd.py):

- no entropy term on target (TLlib adds ``trade_off_entropy`` x its batch-mean entropy to stages
  A and B; the paper has none, and the config has no key for it);
- the classifiers are the config's label classifier (``MLPHead`` with the backbone's hidden
  widths and ``model.dropout_rate``) twice, not TLlib's Dropout-Linear-BN-ReLU-Dropout-Linear-
  BN-ReLU-Linear head with a 1024-wide bottleneck; both optimizer states use the config's
  optimizer (TLlib: plain SGD for G, SGD with momentum 0.9 for F, weight decay 5e-4, fixed lr);
- with pretrained weights (``model.pretrained``), ``classifier_2``'s hidden layers start as
  copies of the classifier's pretrained ones (its output layer stays its own random one, so the
  two differ); TLlib's two heads are both fresh;
- evaluation (target and validation accuracy, predictions) uses ``classifier`` alone; TLlib
  reports both classifiers' accuracy and selects on the better one.

The same stages are the MCD paper's Algorithm; the paper's ``n`` is ``num_k``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxdann.errors import ConfigError
from jaxdann.losses import classifier_discrepancy
from jaxdann.methods.base import Method, joint_mask, masked_mean, per_example_loss
from jaxdann.models.heads import MLPHead
from jaxdann.models.layers import compute_dtype

__all__ = ["MCD", "at_step"]


def at_step(opt_state, step: jax.Array):
    """``opt_state`` with its learning-rate schedule's count set to the train step ``step``.

    optax's ``scale_by_schedule`` reads its own update count; a method that updates a group
    several times per step sets it back before each update, so every update of a step gets the
    schedule's value at that step. Other counts (Adam's bias correction) are left alone.
    """

    def is_schedule(node) -> bool:
        return isinstance(node, optax.ScaleByScheduleState)

    def reset(node):
        if is_schedule(node):
            return node._replace(count=jnp.asarray(step, node.count.dtype))
        return node

    return jax.tree.map(reset, opt_state, is_leaf=is_schedule)


class MCD(Method):
    label = "MCD"
    needs_target = True
    adds_mcc_regularizer = True
    epoch_metrics = (
        "learning_rate",
        "class_loss",
        "source_accuracy",
        "class_loss_2",
        "discrepancy",
    )

    def __init__(self, config, network, *, mean, std):
        super().__init__(config, network, mean=mean, std=std)
        if int(config.method.num_k) < 1:
            raise ConfigError(f"config key method.num_k={config.method.num_k}: use 1 or more.")
        features = tuple(part for part in ("features", "bottleneck") if part in network.names)
        self.groups = {"features": features, "classifiers": ("classifier", "classifier_2")}

    @classmethod
    def heads(cls, config, backbone, num_classes):
        rate = float(config.model.dropout_rate)
        hidden = tuple(backbone.classifier_hidden)
        return {"classifier_2": MLPHead(hidden, num_classes, rate, compute_dtype(config))}

    def init_params(self, params):
        """With pretrained weights, ``classifier_2``'s hidden layers start as (fresh) copies of
        the classifier's pretrained ones; its output layer keeps its own random values."""
        if str(self.config.model.pretrained).lower() in ("", "none"):
            return params
        second = dict(params["classifier_2"])
        for layer, value in params["classifier"].items():
            if layer != "output":
                # Copies, not views: the train step donates its state, leaf by leaf.
                second[layer] = jax.tree.map(jnp.array, value)
        return {**params, "classifier_2": second}

    def init_optimizer(self, optimizer, params):
        """One optimizer state per parameter group (``"features"``, ``"classifiers"``)."""
        return {
            group: optimizer.init({part: params[part] for part in parts})
            for group, parts in self.groups.items()
        }

    # -- the forward pass and the objectives ---------------------------------------------------

    def _forward(self, params, model_state, images, key, batch):
        """Both classifiers' logits on all rows (source first) and the model state after."""
        net, mask = self.network, joint_mask(batch)
        features, model_state = net.embed(
            params, model_state, images, train=True, rng=key, mask=mask
        )
        logits_1, model_state = net.run(
            params, model_state, "classifier", features, train=True, rng=key, mask=mask
        )
        logits_2, model_state = net.run(
            params, model_state, "classifier_2", features, train=True, rng=key, mask=mask
        )
        return logits_1, logits_2, model_state

    def _discrepancy(self, logits_1, logits_2, batch):
        count = batch["source_labels"].shape[0]
        p1, p2 = jax.nn.softmax(logits_1[count:]), jax.nn.softmax(logits_2[count:])
        return classifier_discrepancy(p1, p2, mask=batch["target_mask"])

    def _source_objective(self, params, model_state, images, key, batch, maximise: bool):
        """Stage A (``maximise=False``): both classifiers' source class losses, summed. Stage B
        (``maximise=True``): minus ``trade_off`` x the target discrepancy as well."""
        logits_1, logits_2, model_state = self._forward(params, model_state, images, key, batch)
        count = batch["source_labels"].shape[0]
        loss, sums = self.classification(logits_1[:count], batch)
        mask = batch["source_mask"]
        losses_2 = per_example_loss(logits_2[:count], batch["source_labels"])
        loss = loss + masked_mean(losses_2, mask)
        sums |= {"class_loss_2": jnp.sum(losses_2 * mask)}
        if not maximise and self.mcc_weight > 0:  # stage A: both classifiers' target logits
            term_1, sums_1 = self.target_regularizer(logits_1[count:], batch)
            term_2, sums_2 = self.target_regularizer(logits_2[count:], batch)
            loss = loss + (term_1 + term_2) / 2
            sums |= {"mcc_regularizer": (sums_1["mcc_regularizer"] + sums_2["mcc_regularizer"]) / 2}
        if maximise:
            trade_off = float(self.config.method.trade_off)
            loss = loss - trade_off * self._discrepancy(logits_1, logits_2, batch)
        return loss, (sums, model_state)

    def _feature_objective(self, params, model_state, images, key, batch):
        """Stage C: ``trade_off`` x the target discrepancy (and the discrepancy itself)."""
        logits_1, logits_2, model_state = self._forward(params, model_state, images, key, batch)
        discrepancy = self._discrepancy(logits_1, logits_2, batch)
        return float(self.config.method.trade_off) * discrepancy, (discrepancy, model_state)

    # -- one step ------------------------------------------------------------------------------

    def _stage(self, objective, params, opt_states, groups, optimizer, step):
        """One gradient of ``objective(params)`` with respect to the parts of ``groups`` only,
        and one optimizer update per group: ``(params, opt_states, value, aux)``."""
        parts = [part for group in groups for part in self.groups[group]]
        trained = {part: params[part] for part in parts}
        grad_fn = jax.value_and_grad(lambda tree: objective(params | tree), has_aux=True)
        (value, aux), grads = grad_fn(trained)
        opt_states = dict(opt_states)
        for group in groups:
            sub = {part: trained[part] for part in self.groups[group]}
            sub_grads = {part: grads[part] for part in self.groups[group]}
            group_state = at_step(opt_states[group], step)
            updates, opt_states[group] = optimizer.update(sub_grads, group_state, sub)
            params = params | optax.apply_updates(sub, updates)
        return params, opt_states, value, aux

    def update(self, state, batch, rng, progress, optimizer):
        """Stages A, B and C (``num_k`` times) on one batch; ``sums`` are stage A's class loss
        and accuracy (classifier 1), classifier 2's class loss, and the discrepancy that the
        last feature update descended (measured before it, as TLlib's "Trans Loss")."""
        source, target, key = self.prepare(batch, rng)
        images = jnp.concatenate([source, target])
        step = progress["step"]

        def source_objective(index, model_state, maximise):
            def objective(params):
                k = jax.random.fold_in(key, index)
                return self._source_objective(params, model_state, images, k, batch, maximise)

            return objective

        params, opt_states = state.params, state.opt_state
        both = ("features", "classifiers")
        objective = source_objective(0, state.model_state, False)
        params, opt_states, loss, (sums, model_state) = self._stage(
            objective, params, opt_states, both, optimizer, step
        )
        objective = source_objective(1, model_state, True)
        params, opt_states, _, (_, model_state) = self._stage(
            objective, params, opt_states, ("classifiers",), optimizer, step
        )

        def feature_update(index, carry):
            params, opt_states, model_state, _ = carry

            def objective(params):
                k = jax.random.fold_in(key, 2 + index)
                return self._feature_objective(params, model_state, images, k, batch)

            params, opt_states, _, (discrepancy, model_state) = self._stage(
                objective, params, opt_states, ("features",), optimizer, step
            )
            return params, opt_states, model_state, discrepancy

        carry = (params, opt_states, model_state, jnp.zeros((), jnp.float32))
        num_k = int(self.config.method.num_k)
        for index in range(num_k):
            carry = feature_update(index, carry)
        params, opt_states, model_state, discrepancy = carry
        target_count = jnp.sum(batch["target_mask"])
        sums |= {"discrepancy": discrepancy * target_count, "target_count": target_count}
        loss = loss + float(self.config.method.trade_off) * discrepancy
        state = state.replace(params=params, opt_state=opt_states, model_state=model_state)
        return state, sums | {"loss": loss}

    # -- an epoch ------------------------------------------------------------------------------

    def summarize(self, totals, stacked):
        return super().summarize(totals, stacked) | {
            "class_loss_2": totals["class_loss_2"] / totals["source_count"],
            "discrepancy": totals["discrepancy"] / totals["target_count"],
        }

    def describe(self, row):
        return super().describe(row) + (
            f"  class loss 2 {row['class_loss_2']:.4f}  discrepancy {row['discrepancy']:.4f}"
        )

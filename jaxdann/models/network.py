"""A network as named parts: features, an optional bottleneck, the classifier, a method's heads.

Methods call the parts they need one at a time (DANN: features, classifier, domain classifier
through the reversal layer; MCD: features and two classifiers), so the network is one Flax
module whose call takes the part's name. Each part's parameters (and BatchNorm statistics) sit
under that name: ``{"features", ["bottleneck",] "classifier", <heads>...}``, so converted
weights fill ``features`` and ``classifier`` whatever the method, and a part's random
initialisation and dropout masks depend only on its name and the root key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.layers import row_mask

__all__ = ["Parts", "Network"]

Variables = dict[str, Any]


class Parts(nn.Module):
    """``Parts(parts=(("features", module), ...)).apply(variables, "features", x, train)``."""

    parts: tuple[tuple[str, nn.Module], ...]

    @nn.compact
    def __call__(self, part: str, x: jax.Array, train: bool = False) -> jax.Array:
        module = dict(self.parts)[part]
        return module.clone(parent=self, name=part)(x, train)


@dataclasses.dataclass(frozen=True)
class Network:
    """The parts of one model and how to run them (a plain object; the arrays live elsewhere).

    Equal networks (the same parts, compared as Flax modules compare) share compiled code.

    ``params`` is ``{part: ...}``; ``model_state`` holds the collections beyond parameters
    (``{"batch_stats": {part: ...}}``; empty for networks without BatchNorm).
    """

    parts: tuple[tuple[str, nn.Module], ...]

    @property
    def module(self) -> Parts:
        return Parts(self.parts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)

    @property
    def heads(self) -> tuple[str, ...]:
        """The parts a method added."""
        return tuple(n for n in self.names if n not in ("features", "bottleneck", "classifier"))

    def run(
        self,
        params: Mapping,
        model_state: Mapping,
        part: str,
        x: jax.Array,
        *,
        train: bool,
        rng: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, dict]:
        """``part`` on ``x``: its output and the model state after it (BatchNorm updates it
        in train mode). ``rng`` is the dropout key; every part derives its own from it.
        ``mask``: 1 for the real rows of ``x``, 0 for padding rows, which BatchNorm's batch
        statistics then leave out (:func:`jaxdann.models.layers.row_mask`)."""
        variables = {"params": params, **model_state}
        if not train:
            return self.module.apply(variables, part, x, train=False), dict(model_state)
        rngs = {} if rng is None else {"dropout": rng}
        mutable = list(model_state)
        with row_mask(mask):
            if not mutable:
                return self.module.apply(variables, part, x, train=True, rngs=rngs), {}
            y, updates = self.module.apply(
                variables, part, x, train=True, rngs=rngs, mutable=mutable
            )
        return y, {**model_state, **updates}

    def embed(self, params, model_state, images, *, train: bool, rng=None, mask=None):
        """Backbone features, through the bottleneck if there is one (``mask``: as
        :meth:`run`'s)."""
        features, model_state = self.run(
            params, model_state, "features", images, train=train, rng=rng, mask=mask
        )
        if "bottleneck" in self.names:
            features, model_state = self.run(
                params, model_state, "bottleneck", features, train=train, rng=rng, mask=mask
            )
        return features, model_state

    def logits(self, params, model_state, images) -> jax.Array:
        """Class logits in evaluation mode (what evaluation and prediction use)."""
        features, _ = self.embed(params, model_state, images, train=False)
        return self.run(params, model_state, "classifier", features, train=False)[0]

    def init(
        self,
        rng: jax.Array,
        image_shape: tuple[int, ...],
        head_inputs: Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]],
    ) -> Variables:
        """Random variables for every part, each from ``rng`` and its name alone.

        ``head_inputs(features, logits)`` gives each head part a sample input (a method's
        heads may read more than the features, e.g. CDAN's multilinear map).
        """
        module = self.module
        variables: dict[str, dict] = {}

        def init_part(part, x):
            new = module.init({"params": rng}, part, x, train=False)
            for collection, value in new.items():
                variables.setdefault(collection, {}).update(value)
            return module.apply(new, part, x, train=False)

        x = init_part("features", jnp.zeros((1, *image_shape), jnp.float32))
        if "bottleneck" in self.names:
            x = init_part("bottleneck", x)
        logits = init_part("classifier", x)
        inputs = head_inputs(x, logits)
        for head in self.heads:
            init_part(head, inputs.get(head, x))
        return variables

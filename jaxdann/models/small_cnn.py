"""The DANN paper's small CNN for digits (Ganin et al. 2016, MNIST architecture)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.layers import Dtype, conv, max_pool

__all__ = ["SmallCNNFeatures"]


class SmallCNNFeatures(nn.Module):
    """The DANN paper's MNIST feature extractor: conv 32 - pool - conv 48 - pool."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = images.astype(self.dtype)
        pool = lambda y: max_pool(y, 2, 2)  # noqa: E731
        x = pool(nn.relu(conv(x, 32, 5, 1, 0, "conv1", self.dtype)))
        x = pool(nn.relu(conv(x, 48, 5, 1, 0, "conv2", self.dtype)))
        return x.reshape(x.shape[0], -1)

"""Heads on top of a backbone's features: MLP classifiers and the bottleneck."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.layers import BatchNorm, Dtype, dense, torch_uniform

__all__ = ["BatchNorm", "Bottleneck", "MLPHead"]


class MLPHead(nn.Module):
    """``[dropout -> dense -> relu] * len(hidden) -> dense``, torchvision AlexNet's layout."""

    hidden: Sequence[int]
    num_outputs: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        for index, width in enumerate(self.hidden):
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(dense(x, width, f"hidden_{index}", self.dtype))
        return dense(x, self.num_outputs, "output", self.dtype).astype(jnp.float32)


class Bottleneck(nn.Module):
    """``Linear(width) -> BatchNorm1d -> ReLU``, TLlib's bottleneck between backbone and heads.

    BatchNorm follows torch: momentum 0.1 for the running statistics (Flax's 0.9), epsilon 1e-5,
    the unbiased batch variance in the running estimate; in train mode it normalises with the
    batch's statistics and updates ``batch_stats``.
    """

    width: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        fan_in = x.shape[-1]
        x = nn.Dense(
            self.width,
            kernel_init=torch_uniform(fan_in),
            bias_init=torch_uniform(fan_in),
            dtype=self.dtype,
            name="dense",
        )(x)
        x = BatchNorm(name="norm")(x, train)
        return nn.relu(x)

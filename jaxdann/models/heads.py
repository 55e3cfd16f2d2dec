"""Heads on top of a backbone's features: MLP classifiers and the bottleneck."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.layers import Dtype, dense, torch_uniform

__all__ = ["Bottleneck", "MLPHead"]


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


class BatchNorm(nn.Module):
    """torch's ``BatchNorm1d``/``2d`` over the last axis (NHWC or NC): batch statistics in train
    mode, running ones in eval mode; the running variance gets the unbiased batch variance.

    Flax's ``nn.BatchNorm`` keeps the biased variance in its running average, which torch does
    not; this layer keeps torch's, so converted running statistics mean the same thing.
    """

    momentum: float = 0.1  # torch's convention: new = (1 - momentum) * old + momentum * batch
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            values = x.astype(jnp.float32)
            batch_mean = values.mean(axes)
            batch_var = jnp.square(values - batch_mean).mean(axes)
            count = values.size // features
            if not self.is_initializing():
                unbiased = batch_var * (count / max(count - 1, 1))
                mean.value = (1 - self.momentum) * mean.value + self.momentum * batch_mean
                var.value = (1 - self.momentum) * var.value + self.momentum * unbiased
        else:
            batch_mean, batch_var = mean.value, var.value
        y = (x.astype(jnp.float32) - batch_mean) * jax.lax.rsqrt(batch_var + self.epsilon)
        return (y * scale + bias).astype(x.dtype)

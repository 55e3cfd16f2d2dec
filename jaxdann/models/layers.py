"""Layers the backbones share, initialised and computed as torch does.

Images are NHWC float arrays (already normalised). Layers initialise as torch does
(``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases), so a randomly initialised run
starts from the same distribution as a randomly initialised torchvision model.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Dtype",
    "SpaceToDepthConv",
    "adaptive_avg_pool",
    "compute_dtype",
    "conv",
    "dense",
    "max_pool",
    "torch_uniform",
]

Dtype = Any


def compute_dtype(config) -> Dtype:
    """The compute dtype ``model.dtype`` names (parameters stay float32)."""
    return jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
    """torch's default Linear/Conv init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(x, features, kernel, stride, padding, name, dtype):
    fan_in = x.shape[-1] * kernel * kernel
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        kernel_init=torch_uniform(fan_in),
        bias_init=torch_uniform(fan_in),
        dtype=dtype,
        name=name,
    )(x)


def dense(x, features, name, dtype):
    fan_in = x.shape[-1]
    return nn.Dense(
        features,
        kernel_init=torch_uniform(fan_in),
        bias_init=torch_uniform(fan_in),
        dtype=dtype,
        name=name,
    )(x)


def _pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Row i averages input positions [floor(i*in/out), ceil((i+1)*in/out)), as torch does."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """``torch.nn.MaxPool2d(window, stride)`` (no padding) on NHWC input.

    The forward pass is XLA's max ``reduce_window``. The backward pass is written out: each
    window's gradient goes to its first maximal element (in row-major window order, as torch's
    kernels do), by comparing the window positions with the output and placing the selected
    gradients back with strided pads; elementwise work that XLA fuses. A window holding a NaN
    sends its gradient to its first NaN, as torch does. Overlapping windows add up in float32.
    XLA's own gradient, ``select_and_scatter``, materialises index arrays of the input's size on
    CPU (XLA:CPU, jax 0.10: 165 ms against 35 ms for AlexNet's three pools over 32 images; see
    benchmarks/README.md). Being a custom VJP, it supports reverse mode only (``jax.grad``, not
    ``jax.jvp``), which is all training uses.
    """
    return jax.lax.reduce_window(
        x,
        jnp.array(-jnp.inf, x.dtype),
        jax.lax.max,
        (1, window, window, 1),
        (1, stride, stride, 1),
        "VALID",
    )


def _max_pool_forward(x, window, stride):
    y = max_pool(x, window, stride)
    return y, (x, y)


def _max_pool_backward(window, stride, residuals, grad):
    x, y = residuals
    batch, height, width, channels = x.shape
    _, out_height, out_width, _ = y.shape
    zero = jnp.zeros((), jnp.float32)
    taken = jnp.zeros(y.shape, bool)
    grad = grad.astype(jnp.float32)
    grad_x = jnp.zeros(x.shape, jnp.float32)
    y_is_nan = jnp.isnan(y)
    for i in range(window):
        for j in range(window):
            # The input element at offset (i, j) of every window, as an output-shaped array.
            limit = (batch, i + stride * (out_height - 1) + 1, j + stride * (out_width - 1) + 1)
            candidate = jax.lax.slice(x, (0, i, j, 0), (*limit, channels), (1, stride, stride, 1))
            hit = ((candidate == y) | (jnp.isnan(candidate) & y_is_nan)) & ~taken
            taken = taken | hit
            # Back to the input's positions: offset (i, j), stride apart (interior padding).
            padding = (
                (0, 0, 0),
                (i, height - limit[1], stride - 1),
                (j, width - limit[2], stride - 1),
                (0, 0, 0),
            )
            grad_x = grad_x + jax.lax.pad(jnp.where(hit, grad, zero), zero, padding)
    return (grad_x.astype(x.dtype),)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def adaptive_avg_pool(x: jax.Array, output_size: int) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d`` for NHWC input.

    Every torch window is a rectangle of rows x columns, so the mean separates into a row average
    followed by a column average: two small matrix products instead of output_size**2 slices.
    """
    _, height, width, _ = x.shape
    if height == output_size and width == output_size:
        return x
    rows = jnp.asarray(_pool_matrix(height, output_size), x.dtype)
    cols = jnp.asarray(_pool_matrix(width, output_size), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


class SpaceToDepthConv(nn.Module):
    """A strided convolution computed as a stride-1 convolution on space-to-depth input.

    The ``kernel`` (HWIO) and ``bias`` parameters are exactly :class:`flax.linen.Conv`'s, so
    weights, checkpoints and conversions are unchanged; only the computation differs. The input is
    cut into ``stride x stride`` blocks whose pixels become channels (AlexNet's conv1: 3 channels,
    11x11 stride 4 -> 48 channels, 3x3 stride 1), and the kernel, zero-padded to a multiple of the
    stride, is rearranged to match. Same sums, fewer and fuller tensor-core tiles on a GPU. (The
    zero taps of the padded kernel also meet pixels the convolution never reads, so an inf or NaN
    there, which normalised images do not hold, would reach the output.)
    """

    features: int
    kernel_size: int
    stride: int
    padding: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        size, stride, pad = self.kernel_size, self.stride, self.padding
        fan_in = channels * size * size
        kernel = self.param(
            "kernel", torch_uniform(fan_in), (size, size, channels, self.features), jnp.float32
        )
        bias = self.param("bias", torch_uniform(fan_in), (self.features,), jnp.float32)
        blocks = -(-size // stride)  # kernel extent in blocks
        out_height = (height + 2 * pad - size) // stride + 1
        out_width = (width + 2 * pad - size) // stride + 1
        # Exactly the padded extent the output reads, rounded up to whole blocks (a negative
        # high padding drops rows no window reaches).
        padded_height = stride * (out_height - 1 + blocks)
        padded_width = stride * (out_width - 1 + blocks)
        zero = jnp.zeros((), self.dtype)
        x = jax.lax.pad(
            x.astype(self.dtype),
            zero,
            (
                (0, 0, 0),
                (pad, padded_height - height - pad, 0),
                (pad, padded_width - width - pad, 0),
                (0, 0, 0),
            ),
        )
        x = x.reshape(batch, padded_height // stride, stride, padded_width // stride, stride, -1)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(
            batch, padded_height // stride, padded_width // stride, stride * stride * channels
        )
        extra = blocks * stride - size
        w = jnp.pad(kernel.astype(self.dtype), ((0, extra), (0, extra), (0, 0), (0, 0)))
        w = w.reshape(blocks, stride, blocks, stride, channels, self.features)
        w = w.transpose(0, 2, 1, 3, 4, 5).reshape(
            blocks, blocks, stride * stride * channels, self.features
        )
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + bias.astype(self.dtype)

"""Flax models: torchvision's AlexNet, the DANN paper's small digits CNN, and the DANN wrapper.

Images are NHWC float arrays (already normalised). Layers initialise as torch does
(``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases), so a randomly initialised run
starts from the same distribution as a randomly initialised torchvision model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdann.grl import reverse_gradient

__all__ = [
    "AlexNet",
    "AlexNetFeatures",
    "DANN",
    "MLPHead",
    "SmallCNNFeatures",
    "SpaceToDepthConv",
    "adaptive_avg_pool",
    "max_pool",
    "build_model",
    "MIN_ALEXNET_SIZE",
]

Dtype = Any
MIN_ALEXNET_SIZE = 63  # smallest input for which AlexNet's feature stack yields a 1x1 map


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
    """torch's default Linear/Conv init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(x, features, kernel, stride, padding, name, dtype):
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


def _dense(x, features, name, dtype):
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


def _xla_max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """The same forward pass as :func:`max_pool`, differentiated by XLA (``select_and_scatter``)."""
    return nn.max_pool(x, (window, window), strides=(stride, stride))


class AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet.features`` + ``avgpool`` + flatten (in H, W, C order).

    ``stem`` and ``pool_gradient`` choose how, not what, is computed (same parameters, same
    function; ``benchmarks/train_step.py`` compares them on a GPU): ``stem="space_to_depth"``
    runs conv1 as :class:`SpaceToDepthConv`; ``pool_gradient="xla"`` differentiates the max
    pools with XLA's ``select_and_scatter`` instead of :func:`max_pool`'s written-out backward.
    """

    dtype: Dtype = jnp.float32
    stem: str = "conv"
    pool_gradient: str = "first_max"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation in the feature stack
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"AlexNet expects NHWC images with 3 channels, got shape {images.shape}"
            )
        if min(images.shape[1:3]) < MIN_ALEXNET_SIZE:
            raise ValueError(
                f"AlexNet needs images of at least {MIN_ALEXNET_SIZE}x{MIN_ALEXNET_SIZE} pixels, "
                f"got {images.shape[1]}x{images.shape[2]}; raise data.crop / data.resize."
            )
        if self.stem not in ("conv", "space_to_depth"):
            raise ValueError(f"unknown stem {self.stem!r}; choose 'conv' or 'space_to_depth'")
        if self.pool_gradient not in ("first_max", "xla"):
            raise ValueError(
                f"unknown pool_gradient {self.pool_gradient!r}; choose 'first_max' or 'xla'"
            )
        x = images.astype(self.dtype)
        pool_fn = _xla_max_pool if self.pool_gradient == "xla" else max_pool
        pool = lambda y: pool_fn(y, 3, 2)  # noqa: E731
        if self.stem == "space_to_depth":
            x = SpaceToDepthConv(64, 11, 4, 2, self.dtype, name="conv1")(x)
        else:
            x = _conv(x, 64, 11, 4, 2, "conv1", self.dtype)
        x = pool(nn.relu(x))
        x = pool(nn.relu(_conv(x, 192, 5, 1, 2, "conv2", self.dtype)))
        x = nn.relu(_conv(x, 384, 3, 1, 1, "conv3", self.dtype))
        x = nn.relu(_conv(x, 256, 3, 1, 1, "conv4", self.dtype))
        x = pool(nn.relu(_conv(x, 256, 3, 1, 1, "conv5", self.dtype)))
        x = adaptive_avg_pool(x, 6)
        return x.reshape(x.shape[0], -1)


class SmallCNNFeatures(nn.Module):
    """The DANN paper's MNIST feature extractor: conv 32 - pool - conv 48 - pool."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = images.astype(self.dtype)
        pool = lambda y: max_pool(y, 2, 2)  # noqa: E731
        x = pool(nn.relu(_conv(x, 32, 5, 1, 0, "conv1", self.dtype)))
        x = pool(nn.relu(_conv(x, 48, 5, 1, 0, "conv2", self.dtype)))
        return x.reshape(x.shape[0], -1)


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
            x = nn.relu(_dense(x, width, f"hidden_{index}", self.dtype))
        return _dense(x, self.num_outputs, "output", self.dtype).astype(jnp.float32)


class AlexNet(nn.Module):
    """``torchvision.models.alexnet``: ``AlexNet(7).apply({"params": p}, x, train=False)``."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        features = AlexNetFeatures(dtype=self.dtype, name="features")(images)
        head = MLPHead(
            (4096, 4096), self.num_classes, self.dropout_rate, self.dtype, name="classifier"
        )
        return head(features, train)


class DANN(nn.Module):
    """A feature extractor, a label classifier and (optionally) a domain classifier.

    The parameter tree is ``{"features", "classifier"[, "domain_classifier"]}``; with AlexNet parts
    its first two entries are exactly :class:`AlexNet`'s, so converted weights load into either.
    ``domain_classifier=None`` is plain source-only training.
    """

    features: nn.Module
    classifier: nn.Module
    domain_classifier: nn.Module | None = None

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Class logits (what evaluation uses)."""
        return self.classifier(self.features(images, train), train)

    def adversarial(
        self,
        images: jax.Array,
        num_source: int,
        grl_coefficient: jax.Array | float,
        train: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        """One feature pass over ``images`` = source rows followed by target rows.

        Returns the class logits of the first ``num_source`` rows and the domain logits of all
        rows (``None`` without a domain classifier). The domain branch sees the features through
        the gradient reversal layer.
        """
        features = self.features(images, train)
        class_logits = self.classifier(features[:num_source], train)
        if self.domain_classifier is None:
            return class_logits, None
        reversed_features = reverse_gradient(features, grl_coefficient)
        return class_logits, self.domain_classifier(reversed_features, train)

    def extract(self, images: jax.Array, train: bool = True) -> jax.Array:
        """The feature extractor alone."""
        return self.features(images, train)

    def classify(self, features: jax.Array, train: bool = True) -> jax.Array:
        """The label classifier on given features."""
        return self.classifier(features, train)

    def discriminate(self, features: jax.Array, train: bool = True) -> jax.Array:
        """The domain classifier on given features (no reversal layer)."""
        return self.domain_classifier(features, train)

    def initialize_all(self, images: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Touches every submodule (used by ``init``)."""
        return self.adversarial(images, images.shape[0], 0.0, train=False)


def build_model(
    arch: str,
    num_classes: int,
    *,
    adversarial: bool,
    domain_hidden: Sequence[int] | None = None,
    dropout_rate: float | None = None,
    dtype: Dtype = jnp.float32,
    stem: str = "conv",
    pool_gradient: str = "first_max",
) -> DANN:
    """Builds the DANN model for ``arch`` in {"alexnet", "small_cnn"}.

    ``domain_hidden=None`` gives the domain classifier the label classifier's structure (the
    seed's choice); ``adversarial=False`` leaves it out. ``stem`` and ``pool_gradient`` are
    :class:`AlexNetFeatures`' computation variants (AlexNet only).
    """
    if arch != "alexnet" and (stem, pool_gradient) != ("conv", "first_max"):
        raise ValueError(f"stem and pool_gradient variants exist for alexnet only, not {arch!r}")
    if arch == "alexnet":
        features = AlexNetFeatures(dtype=dtype, stem=stem, pool_gradient=pool_gradient)
        hidden, default_dropout = (4096, 4096), 0.5
    elif arch == "small_cnn":
        features = SmallCNNFeatures(dtype=dtype)
        hidden, default_dropout = (100, 100), 0.0
    else:
        raise ValueError(f"unknown model.arch {arch!r}; choose 'alexnet' or 'small_cnn'")
    rate = default_dropout if dropout_rate is None else dropout_rate
    classifier = MLPHead(hidden, num_classes, rate, dtype)
    domain_classifier = None
    if adversarial:
        domain_layers = hidden if domain_hidden is None else tuple(domain_hidden)
        domain_classifier = MLPHead(domain_layers, 2, rate, dtype)
    return DANN(features, classifier, domain_classifier)

"""torchvision's AlexNet: the feature stack (a backbone) and the whole classifier."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.heads import MLPHead
from jaxdann.models.layers import Dtype, SpaceToDepthConv, adaptive_avg_pool, conv, max_pool

__all__ = ["AlexNet", "AlexNetFeatures", "MIN_ALEXNET_SIZE"]

MIN_ALEXNET_SIZE = 63  # smallest input for which AlexNet's feature stack yields a 1x1 map


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
            x = conv(x, 64, 11, 4, 2, "conv1", self.dtype)
        x = pool(nn.relu(x))
        x = pool(nn.relu(conv(x, 192, 5, 1, 2, "conv2", self.dtype)))
        x = nn.relu(conv(x, 384, 3, 1, 1, "conv3", self.dtype))
        x = nn.relu(conv(x, 256, 3, 1, 1, "conv4", self.dtype))
        x = pool(nn.relu(conv(x, 256, 3, 1, 1, "conv5", self.dtype)))
        x = adaptive_avg_pool(x, 6)
        return x.reshape(x.shape[0], -1)


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

"""torchvision's ResNet-18, -34 and -50 (NHWC): the feature stack (a backbone) and the classifier.

The layers, their order and their names follow ``torchvision.models.resnet`` (ResNet v1.5: the
bottleneck block strides in its 3x3 convolution), so converted ImageNet weights give
torchvision's logits: ``conv1``, ``bn1``, then ``layer1_0`` ... ``layer4_2`` (torch's
``layer1.0`` ...), each block with ``conv1``/``bn1`` ... and, where the shape changes,
``downsample_conv``/``downsample_bn`` (torch's ``downsample.0``/``.1``). BatchNorm is
:class:`jaxdann.models.layers.BatchNorm` (torch's momentum, epsilon and running variance).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.models.heads import MLPHead
from jaxdann.models.layers import BatchNorm, Dtype, max_pool

__all__ = [
    "RESNET_STAGES",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNetFeatures",
]

# arch -> (block kind, blocks per stage); torchvision's table.
RESNET_STAGES: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
_BATCHNORM_MODES = ("train", "frozen")

# torchvision's conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _PointwiseConv(nn.Module):
    """A bias-free 1x1 convolution computed as a matrix product over ``[pixels, channels]``.

    The parameter is :class:`flax.linen.Conv`'s ``kernel`` (``[1, 1, in, out]``, same name,
    shape and initialiser), so weights, checkpoints and conversions are unchanged. As a product,
    the filter gradient contracts the pixels of the NHWC maps where they lie; XLA:CPU computes
    a convolution's filter gradient on transposed copies of both maps, into which it also folds
    (recomputes) the BatchNorm, residual and ReLU work that produced them. The product form
    takes more than a third off ResNet-50's forward + backward on 2 CPU cores
    (benchmarks/README.md).
    """

    features: int
    stride: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _conv_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        if self.stride > 1:  # torch's strided 1x1 convolution reads every stride-th pixel
            x = x[:, :: self.stride, :: self.stride, :]
        batch, height, width, channels = x.shape
        y = jax.lax.dot_general(
            x.astype(self.dtype).reshape(-1, channels),
            kernel.astype(self.dtype).reshape(channels, self.features),
            (((1,), (0,)), ((), ())),
        )
        return y.reshape(batch, height, width, self.features)


def _conv(x, features, kernel, stride, name, dtype):
    """A bias-free convolution with torch's padding (kernel // 2 on each side)."""
    if kernel == 1:
        return _PointwiseConv(features, stride, dtype, name=name)(x)
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        name=name,
    )(x)


class _Block(nn.Module):
    """A residual block: ``basic`` (two 3x3 convolutions) or ``bottleneck`` (1x1, 3x3, 1x1)."""

    kind: str
    width: int
    stride: int
    frozen: bool
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def norm(y, name):
            return BatchNorm(frozen=self.frozen, name=name)(y, train)

        if self.kind == "basic":
            convs = ((self.width, 3, self.stride), (self.width, 3, 1))
        else:
            convs = ((self.width, 1, 1), (self.width, 3, self.stride), (self.width * 4, 1, 1))
        y = x
        for index, (features, kernel, stride) in enumerate(convs, start=1):
            y = _conv(y, features, kernel, stride, f"conv{index}", self.dtype)
            y = norm(y, f"bn{index}")
            if index < len(convs):
                y = nn.relu(y)
        out_features = convs[-1][0]
        if self.stride != 1 or x.shape[-1] != out_features:
            x = _conv(x, out_features, 1, self.stride, "downsample_conv", self.dtype)
            x = norm(x, "downsample_bn")
        return nn.relu(y + x)


class ResNetFeatures(nn.Module):
    """torchvision ResNet up to and including the global average pool: ``[batch, 512 x
    expansion]`` features (512 for ResNet-18/34, 2048 for ResNet-50).

    ``batchnorm``: ``train`` (torch's ``train()``: batch statistics, running ones updated) or
    ``frozen`` (torch's ``eval()`` on every BatchNorm: the running statistics normalise and stay
    fixed, as DomainBed freezes them; the scales and biases still train).
    """

    arch: str = "resnet50"
    batchnorm: str = "train"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if self.arch not in RESNET_STAGES:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {list(RESNET_STAGES)}")
        if self.batchnorm not in _BATCHNORM_MODES:
            raise ValueError(f"unknown batchnorm {self.batchnorm!r}; choose train or frozen")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ResNet expects NHWC images with 3 channels, got {images.shape}")
        kind, stages = RESNET_STAGES[self.arch]
        frozen = self.batchnorm == "frozen"
        x = _conv(images.astype(self.dtype), 64, 7, 2, "conv1", self.dtype)
        x = nn.relu(BatchNorm(frozen=frozen, name="bn1")(x, train))
        # torch's MaxPool2d(3, 2, padding=1): the padding never wins (it is -inf).
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        x = max_pool(x, 3, 2)
        for stage, blocks in enumerate(stages):
            width = 64 * 2**stage
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                name = f"layer{stage + 1}_{index}"
                x = _Block(kind, width, stride, frozen, self.dtype, name=name)(x, train)
        return x.mean(axis=(1, 2))


class ResNet(nn.Module):
    """A whole torchvision ResNet: ``features`` then ``classifier`` (``output``: torch's
    ``fc``). ``ResNet("resnet50", 1000).apply(variables, images, train=False)`` with
    ``variables = {"params": ..., "batch_stats": ...}``."""

    arch: str = "resnet50"
    num_classes: int = 1000
    batchnorm: str = "train"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        features = ResNetFeatures(self.arch, self.batchnorm, self.dtype, name="features")
        head = MLPHead((), self.num_classes, 0.0, self.dtype, name="classifier")
        return head(features(images, train), train)


def ResNet18(num_classes: int = 1000, **kwargs) -> ResNet:  # noqa: N802  (torchvision's name)
    """``torchvision.models.resnet18``."""
    return ResNet("resnet18", num_classes, **kwargs)


def ResNet34(num_classes: int = 1000, **kwargs) -> ResNet:  # noqa: N802
    """``torchvision.models.resnet34``."""
    return ResNet("resnet34", num_classes, **kwargs)


def ResNet50(num_classes: int = 1000, **kwargs) -> ResNet:  # noqa: N802
    """``torchvision.models.resnet50``."""
    return ResNet("resnet50", num_classes, **kwargs)

"""Backbones by name (``model.arch``): a feature extractor, its classifier's shape, its weights.

Adding a backbone: a module with its Flax feature extractor and a ``BACKBONES.register`` line
(here, or in any module imported before the run starts). The converter, if the backbone has
torchvision weights, turns a torch ``state_dict`` into ``{"features": ..., "classifier": ...}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdann.errors import ConfigError
from jaxdann.models.alexnet import MIN_ALEXNET_SIZE, AlexNetFeatures
from jaxdann.models.resnet import RESNET_STAGES, ResNetFeatures
from jaxdann.models.small_cnn import SmallCNNFeatures
from jaxdann.registry import Registry

__all__ = ["Backbone", "BACKBONES", "feature_width"]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """What the rest of jaxdann needs to know of a backbone.

    ``features(model_config, dtype)`` builds the Flax feature extractor (NHWC float images ->
    ``[batch, width]`` features); ``classifier_hidden`` are the label classifier's hidden
    widths (torchvision AlexNet: 4096, 4096; a ResNet: none, a single linear layer);
    ``min_size`` the smallest image side it is checked on (ResNets: 32 px);
    ``convert(state_dict)`` fills ``features`` and ``classifier`` from torchvision weights
    (``None``: no such weights; with BatchNorm, ``{"params", "batch_stats"}``); ``variants``
    are the ``model.*`` keys that only this backbone reads, with their defaults.
    """

    features: Callable[[Any, Any], nn.Module]
    classifier_hidden: tuple[int, ...]
    min_size: int = 1
    convert: Callable[[Mapping[str, Any]], dict] | None = None
    variants: Mapping[str, str] = dataclasses.field(default_factory=dict)


def feature_width(module: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """The width of ``module``'s features for images of ``image_shape`` (no compute)."""
    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), images)
    return jax.eval_shape(module.apply, variables, images).shape[-1]


def _alexnet_convert(state_dict):
    from jaxdann.convert import torchvision_to_flax

    return torchvision_to_flax(state_dict)


def _resnet_features(arch: str) -> Callable[[Any, Any], nn.Module]:
    def features(model, dtype) -> nn.Module:
        if model.batchnorm not in ("train", "frozen"):
            raise ConfigError(
                f"config key model.batchnorm={model.batchnorm!r} is not one of train, frozen."
            )
        return ResNetFeatures(arch, batchnorm=model.batchnorm, dtype=dtype)

    return features


def _resnet_convert(arch: str) -> Callable[[Mapping[str, Any]], dict]:
    def convert(state_dict):
        from jaxdann.convert import torchvision_to_flax

        return torchvision_to_flax(state_dict, arch)

    return convert


BACKBONES: Registry[Backbone] = Registry("model.arch", "backbone")
BACKBONES.register(
    "alexnet",
    Backbone(
        features=lambda model, dtype: AlexNetFeatures(
            dtype=dtype, stem=model.stem, pool_gradient=model.pool_gradient
        ),
        classifier_hidden=(4096, 4096),
        min_size=MIN_ALEXNET_SIZE,
        convert=_alexnet_convert,
        variants={"stem": "conv", "pool_gradient": "first_max"},
    ),
)
BACKBONES.register(
    "small_cnn",
    Backbone(
        features=lambda model, dtype: SmallCNNFeatures(dtype=dtype),
        classifier_hidden=(100, 100),
    ),
)
for _arch in RESNET_STAGES:
    # The classifier is one linear layer (torchvision's fc); model.batchnorm: "train" (batch
    # statistics, the running ones updated: torch's train()) or "frozen" (DomainBed's eval()).
    BACKBONES.register(
        _arch,
        Backbone(
            features=_resnet_features(_arch),
            classifier_hidden=(),
            min_size=32,
            convert=_resnet_convert(_arch),
            variants={"batchnorm": "train"},
        ),
    )

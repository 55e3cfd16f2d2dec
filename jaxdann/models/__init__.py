"""Models: backbones by name, heads, the layers they share, and a network of named parts."""

from jaxdann.models.alexnet import MIN_ALEXNET_SIZE, AlexNet, AlexNetFeatures
from jaxdann.models.backbones import BACKBONES, Backbone, feature_width
from jaxdann.models.heads import Bottleneck, MLPHead
from jaxdann.models.layers import (
    BatchNorm,
    SpaceToDepthConv,
    adaptive_avg_pool,
    max_pool,
    torch_uniform,
)
from jaxdann.models.network import Network, Parts
from jaxdann.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNetFeatures
from jaxdann.models.small_cnn import SmallCNNFeatures

__all__ = [
    "AlexNet",
    "AlexNetFeatures",
    "BACKBONES",
    "Backbone",
    "BatchNorm",
    "Bottleneck",
    "MIN_ALEXNET_SIZE",
    "MLPHead",
    "Network",
    "Parts",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNetFeatures",
    "SmallCNNFeatures",
    "SpaceToDepthConv",
    "adaptive_avg_pool",
    "feature_width",
    "max_pool",
    "torch_uniform",
]

"""Models: backbones by name, heads, the layers they share, and a network of named parts."""

from jaxdann.models.alexnet import MIN_ALEXNET_SIZE, AlexNet, AlexNetFeatures
from jaxdann.models.backbones import BACKBONES, Backbone, feature_width
from jaxdann.models.heads import BatchNorm, Bottleneck, MLPHead
from jaxdann.models.layers import SpaceToDepthConv, adaptive_avg_pool, max_pool, torch_uniform
from jaxdann.models.network import Network, Parts
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
    "SmallCNNFeatures",
    "SpaceToDepthConv",
    "adaptive_avg_pool",
    "feature_width",
    "max_pool",
    "torch_uniform",
]

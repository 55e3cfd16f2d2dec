"""DANN on PACS photo -> art_painting with an ImageNet ResNet-50 and TLlib's recipe.

    python -m jaxdann.convert --arch resnet50 --output weights/resnet50_imagenet.msgpack  # once
    python -m jaxdann.train --config configs/pacs_dann_resnet50.py --config.data.root=/path/to/PACS

The recipe is TLlib's ``dann.py -a resnet50`` defaults (see configs/office31_dann_resnet50.py
for them and for where jaxdann differs): bottleneck 256, domain classifier 1024-1024, batch
32 + 32, SGD lr 0.01 momentum 0.9 weight decay 1e-3 with the backbone at 0.1 x, the annealed
learning rate, the reversal coefficient ramped to 1 over about 20,000 steps (photo: 1,670
images, 52 full batches of 32; 385 epochs = 20,020 steps, ``grl.gamma`` = 20). Model selection
on the held-out domains (cartoon, sketch), as the seed's PACS runs do.

Published: neither TLlib nor the DANN paper reports single-source PACS with ResNet-50 (DomainBed's
PACS results for DANN are multi-source domain generalisation, a different protocol). The nearest
figure is the seed's AlexNet DANN on this pair, 0.4653 target accuracy (configs/pacs_dann.py).
"""

from office31_dann_resnet50 import tllib_resnet50
from pacs_dann import get_config as alexnet_config


def get_config():
    config = tllib_resnet50(alexnet_config())
    config.epochs = 385
    return config

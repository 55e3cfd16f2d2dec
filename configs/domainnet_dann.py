"""DANN on DomainNet clipart -> sketch: train lists for training, the target's test list scored.

    python -m jaxdann.train --config configs/domainnet_dann.py \\
        --config.data.root=/data/domainnet   # ROOT/<domain>/<class>/*.jpg + <domain>_train.txt

Published with ResNet-101 (not registered here; ``--config.model.arch=resnet50`` is the
nearest): 0.442 for clipart and sketch in TLlib's DomainNet DANN table (row clp, column skt;
36.4 averaged over its 20 tasks without quickdraw). This file trains AlexNet, for which no
DomainNet DANN figure is published; expect less. Several sources:
``--config.data.source=clipart,painting,real``. The images are streamed from the files
(``data.streaming=true``: memory stays flat whatever the number of sources), with TLlib's
training crops (``RandomResizedCrop`` after its 256 x 256 resize).
"""

from office31_dann import get_config as office31_config


def get_config():
    config = office31_config()
    config.epochs = 20  # clipart's train list: 33,525 images, ~21,000 steps of 32
    config.data.name = "domainnet"
    config.data.source = "clipart"
    config.data.target = "sketch"
    config.data.validation = "none"
    config.data.streaming = True
    config.data.decode = "reduced"
    config.data.random_crop = False  # the random resized crop replaces it
    config.data.resized_crop_scale = 0.08
    config.data.resize_mode = "square"  # TLlib's ResizeImage(256), before the crop
    return config

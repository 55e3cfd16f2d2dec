"""DANN on VisDA-2017: synthetic renderings (train) -> real photographs (validation).

    python -m jaxdann.train --config configs/visda2017_dann.py \\
        --config.data.root=/data/visda2017   # ROOT/train/, ROOT/validation/, each image_list.txt

Published with ResNet-101 (not registered here; ``--config.model.arch=resnet50`` is the
nearest): 0.749 accuracy over the validation images in TLlib's benchmark (79.5 averaged over
the 12 classes; 57.4 in the original report). This file trains AlexNet, for which no
VisDA-2017 DANN figure is published; expect less. Its 152,397 training images would take
~23 GB as 224 px uint8 in memory, so the run streams them from the files
(``data.streaming=true``), with TLlib's training crops (``RandomResizedCrop`` after its 256 x
256 resize).
"""

from office31_dann import get_config as office31_config


def get_config():
    config = office31_config()
    config.epochs = 5  # ~24,000 steps of 32
    config.data.name = "visda2017"
    config.data.source = "train"
    config.data.target = "validation"
    config.data.validation = "none"
    config.data.streaming = True
    config.data.decode = "reduced"
    config.data.random_crop = False  # the random resized crop replaces it
    config.data.resized_crop_scale = 0.08
    config.data.resize_mode = "square"  # TLlib's ResizeImage(256), before the crop
    return config

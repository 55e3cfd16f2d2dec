"""DANN on Office-Home Art -> Clipart: the Office-31 recipe on Office-Home's four domains.

    python -m jaxdann.train --config configs/office_home_dann.py \\
        --config.data.root=/data/OfficeHomeDataset_10072016    # ROOT/<domain>/<class>/*.jpg
    python -m jaxdann.train --config configs/office_home_dann.py --config.data.target="Real World"

Published (ResNet-50, ``--config.model.arch=resnet50``): 0.538 for Art -> Clipart in TLlib's
benchmark (65.2 averaged over the twelve tasks; 57.6 in the CDAN paper). This file trains AlexNet,
for which no Office-Home DANN figure is published; expect less.
"""

from office31_dann import get_config as office31_config


def get_config():
    config = office31_config()
    config.epochs = 150  # ~11,400 steps of 32 on Art's 2,427 images
    config.data.name = "office_home"
    config.data.source = "Art"
    config.data.target = "Clipart"
    config.data.validation = "none"
    return config

"""DANN on Office-31 amazon -> webcam, ImageNet AlexNet with a 256-wide bottleneck.

    python -m jaxdann.convert --output weights/alexnet_imagenet.msgpack   # once (needs network)
    python -m jaxdann.train --config configs/office31_dann.py \\
        --config.data.root=/data/office31          # ROOT/<domain>/images/<class>/*.jpg

Published: 0.730 target accuracy for amazon -> webcam with AlexNet (Ganin & Lempitsky 2015,
Table 2; DANN's own recipe: bottleneck, reversal ramped 0 -> 1, annealed learning rate, the
backbone at a tenth of it). With ResNet-50 (``--config.model.arch=resnet50``) TLlib reports 0.914
(86.1 averaged over the six tasks). Other tasks: ``--config.data.source=dslr`` etc.
"""

from jaxdann.config import base_config


def get_config():
    config = base_config()
    config.adaptation = "dann"
    config.epochs = 200  # ~17,800 steps of 32 (89 batches of amazon; TLlib trains 20,000)
    config.batch_size = 32
    config.grl.schedule = "dann"  # the paper's ramp 2 / (1 + exp(-10 p)) - 1
    config.grl.coefficient = 1.0
    config.optimizer.learning_rate = 0.01
    config.optimizer.schedule = "annealed"  # lr / (1 + 10 p)^0.75
    config.optimizer.backbone_lr_multiplier = 0.1
    config.model.bottleneck = 256
    config.model.domain_hidden = "1024,1024"
    config.model.domain_init_from_classifier = False
    config.data.name = "office31"
    config.data.source = "amazon"
    config.data.target = "webcam"
    config.data.validation = "none"  # Office-31 has no held-out domain to spare
    config.data.random_crop = True
    config.data.random_flip = True
    return config

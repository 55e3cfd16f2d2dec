"""DANN on Office-31 amazon -> webcam with an ImageNet ResNet-50: TLlib's recipe.

    python -m jaxdann.convert --arch resnet50 --output weights/resnet50_imagenet.msgpack  # once
    python -m jaxdann.train --config configs/office31_dann_resnet50.py \\
        --config.data.root=/data/office31          # ROOT/<domain>/images/<class>/*.jpg

Published: TLlib reports 0.914 target accuracy for amazon -> webcam (DANN, ResNet-50; 86.1
averaged over the six Office-31 tasks). The recipe is TLlib's ``dann.py -a resnet50`` defaults:
a 256-wide bottleneck (Linear + BatchNorm + ReLU), 1024-1024 domain classifier, batch 32 + 32
(one forward over both, as jaxdann's step does), SGD lr 0.01 momentum 0.9 weight decay 1e-3,
the backbone at 0.1 x the learning rate, BatchNorm in train mode, about 20,000 steps, images
resized to 256 x 256 (TLlib's ``ResizeImage``: ``data.resize_mode=square``) and centre-cropped
to 224 for evaluation.

Length: 227 epochs of amazon (2,817 images, 88 full batches of 32 with ``drop_last``) are
19,976 steps. TLlib's reversal coefficient ramps per iteration as 2 / (1 + exp(-i / 1000)) - 1;
the ``dann`` ramp with ``gamma`` = steps / 1000 = 20 over the run is the same curve. For another
source domain, scale ``epochs`` (and keep ``grl.gamma`` = total steps / 1000).

Where it differs from TLlib: SGD without Nesterov (TLlib: ``nesterov=True``); the learning rate
anneals as lr / (1 + 10 p)^0.75 over the run's progress p (TLlib: lr (1 + 0.001 i)^-0.75 per
iteration i, which ends at 0.10 x lr instead of 0.17 x lr); the domain classifier is Dense-ReLU
with dropout 0.5 and a 2-way softmax (TLlib's default: Linear-BatchNorm-ReLU and one sigmoid
logit); augmentation is a random shift of the 224 centre crop (``data.random_crop``: padded by
28 px with reflection, cropped back) and a flip, where TLlib takes a random resized crop of
scale 0.08-1 of the 256 x 256 image: ``--config.data.streaming=true
--config.data.random_crop=false --config.data.resized_crop_scale=0.08`` trains with that.
"""

from office31_dann import get_config as alexnet_config


def tllib_resnet50(config):
    """TLlib's ``dann.py -a resnet50`` recipe on ``config`` (its data settings stay as they are;
    set ``epochs`` for about 20,000 steps of the source domain)."""
    config.model.arch = "resnet50"
    config.model.pretrained = "weights/resnet50_imagenet.msgpack"
    config.model.batchnorm = "train"
    config.model.bottleneck = 256
    config.model.domain_hidden = "1024,1024"
    config.model.domain_init_from_classifier = False
    config.model.dropout_rate = 0.5  # the domain classifier's; the label classifier is linear
    config.batch_size = 32
    config.grl.schedule = "dann"
    config.grl.coefficient = 1.0
    config.grl.gamma = 20.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-3
    config.optimizer.schedule = "annealed"
    config.optimizer.backbone_lr_multiplier = 0.1
    config.data.resize_mode = "square"  # TLlib's ResizeImage(256)
    config.data.drop_last = True  # full batches only, as TLlib's training loaders
    config.data.random_crop = True
    config.data.random_flip = True
    return config


def get_config():
    config = tllib_resnet50(alexnet_config())
    config.epochs = 227
    return config

"""DANN on MNIST -> MNIST-M with the DANN paper's small CNN (Ganin et al. 2016).

    python -m jaxdann.train --config configs/mnist_mnistm_dann.py \\
        --config.data.root=/data/digits   # ROOT/mnist/ (IDX files), ROOT/mnist_m/ (folders + lists)

Published: 0.7666 target accuracy on MNIST-M's test set (Ganin & Lempitsky 2015, Table 1; source
only 0.5225). The paper's network (conv 32 - pool - conv 48 - pool - 100 - 100 - 10, a 100-unit
domain head), its ramped reversal (0 -> 1) and its annealed learning rate from 0.01.
"""

from jaxdann.config import demo_config


def get_config():
    config = demo_config()  # the small CNN, random init, SGD with momentum 0.9
    config.epochs = 20  # 60,000 MNIST digits a pass: ~18,800 steps of 64
    config.grl.coefficient = 1.0
    config.data.name = "digits"
    config.data.source = "mnist"
    config.data.target = "mnist_m"
    config.data.validation = "none"
    config.data.resize = 28
    config.data.crop = 28
    return config

"""The embedded demo: scikit-learn digits -> the same digits on textured photographs (MNIST-M).

    python -m jaxdann.train                                        # DANN (this config)
    python -m jaxdann.train --config configs/demo.py --config.adaptation=none   # source only

Measured numbers (3 and 8 seeds, DANN and source only): README, "The embedded demo". About
20-35 s a run on 2 CPU cores.
"""

from jaxdann.config import demo_config


def get_config():
    return demo_config()

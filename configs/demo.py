"""The embedded demo: scikit-learn digits -> the same digits on textured photographs (MNIST-M).

    python -m jaxdann.train                                        # DANN (this config)
    python -m jaxdann.train --config configs/demo.py --config.adaptation=none   # source only

Expected (README, 3 seeds): see the "Demo results" table; runs in about 2 minutes on 2 CPU cores.
"""

from jaxdann.config import demo_config


def get_config():
    return demo_config()

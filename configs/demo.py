"""The embedded demo: scikit-learn digits -> the same digits on textured photographs (MNIST-M).

    python -m jaxdann.train                                        # DANN (this config)
    python -m jaxdann.train --config configs/demo.py --config.adaptation=none   # source only

Measured numbers (3 and 8 seeds, DANN and source only): docs/results.md, "The embedded demo:
DANN against source only". About 30-55 s a run on 2 CPU cores, as the machine's load varies.
"""

from jaxdann.config import demo_config


def get_config():
    return demo_config()

"""The seed study's baseline: plain AlexNet trained on photo, tested on art_painting.

    python -m jaxdann.train --config configs/pacs_source_only.py --config.data.root=/path/to/PACS

The seed reports a target accuracy of 0.4526 for this setting.
"""

from pacs_dann import get_config as dann_config


def get_config():
    config = dann_config()
    config.adaptation = "none"
    return config

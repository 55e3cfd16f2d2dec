import os

import numpy as np
import pytest
from PIL import Image

# Tests run on the CPU with a few virtual devices, so multi-device code paths are exercised too.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=4".strip()


def write_pacs_tree(root, domains=("photo", "sketch"), classes=("cat", "dog"), per_class=6):
    """A tiny PACS-like folder (``root/<domain>/<class>/<i>.png``, 40x44 px): classes and domains
    differ in brightness, so a small model learns something in a few steps."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = root / domain / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (40, 44, 3)) + 80 * c + 40 * d
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(name="write_pacs_tree")
def write_pacs_tree_fixture():
    return write_pacs_tree

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

# Tests run on the CPU with a few virtual devices, so multi-device code paths are exercised too.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=4".strip()
# One persistent compilation cache for the test run and the processes it starts: the many short
# runs of the same tiny models read their compiled steps instead of compiling them again.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdann-tests-xla-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


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


def tiny_pacs_overrides(root, cache_dir) -> dict[str, str]:
    """Config overrides for a small CNN on a :func:`write_pacs_tree` folder (photo -> sketch, no
    validation, one device): a run takes seconds."""
    return {
        "data.root": str(root),
        "data.source": "photo",
        "data.target": "sketch",
        "data.validation": "none",
        "data.resize": "36",
        "data.crop": "32",
        "data.cache_dir": str(cache_dir),
        "model.arch": "small_cnn",
        "model.pretrained": "none",
        "model.domain_hidden": "16",
        "model.domain_init_from_classifier": "false",
        "batch_size": "8",
        "parallel.num_devices": "1",
        "log_every_epoch": "false",
    }


@pytest.fixture(name="tiny_pacs_overrides")
def tiny_pacs_overrides_fixture():
    return tiny_pacs_overrides


def train_whole_and_resumed(tmp_path, flags):
    """``python -m jaxdann.train`` with ``flags`` for 2 epochs unbroken (``tmp_path/whole``) and
    as 1 epoch, then resumed to 2 (``tmp_path/parts``); returns both folders' metrics rows
    without ``epoch_time_s``. The schedules are ones that do not depend on the run's length
    (so 1 + 1 epochs is 2 epochs) and validation is measured every epoch."""
    import json

    from jaxdann import train

    flags = [
        *flags,
        "--config.log_every_epoch=false",
        "--config.grl.schedule=constant",
        "--config.optimizer.schedule=step",
        "--config.eval.validation_every_epoch=true",
    ]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert train.main(["--workdir", whole, "--config.epochs=2", *flags]) == 0
    assert train.main(["--workdir", parts, "--config.epochs=1", *flags]) == 0
    assert train.main(["--workdir", parts, "--config.epochs=2", *flags]) == 0

    def rows(workdir):
        with open(os.path.join(workdir, "metrics.jsonl")) as handle:
            lines = [json.loads(line) for line in handle]
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in lines]

    return rows(whole), rows(parts)


@pytest.fixture(name="train_whole_and_resumed")
def train_whole_and_resumed_fixture():
    return train_whole_and_resumed

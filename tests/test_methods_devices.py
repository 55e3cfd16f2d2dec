"""The methods with the most state train alike on one device and on four."""

import json
import os

import jax
import pytest

from jaxdann import config as config_lib
from jaxdann.methods import get_method
from jaxdann.training.trainer import train_and_evaluate


def _config(adaptation: str, devices: int):
    config = config_lib.demo_config()
    config.adaptation, config.epochs, config.log_every_epoch = adaptation, 2, False
    # 14 rows per domain are padded to 16 on 4 devices, and the bottleneck's BatchNorm (and
    # CDAN's discriminator's) must leave the padding rows out of its batch statistics.
    config.batch_size, config.data.limit = 14, 48
    config.model.bottleneck = 16
    config.method.num_k = 2
    config.parallel.num_devices = devices
    return config


# MCD by default; CDAN+E (discriminator BatchNorm over the global batch) with -m slow, where
# test_resnet checks BatchNorm statistics over four devices by default.
@pytest.mark.parametrize("adaptation", ["mcd", pytest.param("cdan_e", marks=pytest.mark.slow)])
def test_one_and_four_devices_give_the_same_metrics(adaptation, tmp_path):
    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (set in conftest)")
    rows = {}
    for devices in (1, 4):
        workdir = str(tmp_path / str(devices))
        summary = train_and_evaluate(_config(adaptation, devices), workdir, progress=False)
        assert summary["num_devices"] == devices
        with open(os.path.join(workdir, "metrics.jsonl")) as handle:
            rows[devices] = [json.loads(line) for line in handle]
    keys = (*get_method(adaptation).epoch_metrics, "target_accuracy")
    for one, four in zip(rows[1], rows[4], strict=True):
        for key in keys:
            assert one[key] == pytest.approx(four[key], rel=1e-4, abs=1e-5), key

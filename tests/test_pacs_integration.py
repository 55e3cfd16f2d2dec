"""Real PACS (skipped where absent): a short DANN run from random init trains and evaluates."""

import json
import os

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.data import pacs
from jaxdann.training.trainer import train_and_evaluate

ROOT = pacs.default_root()
pytestmark = pytest.mark.skipif(
    not os.path.isdir(ROOT),
    reason=f"PACS not found at {ROOT}; set JAXDANN_PACS_ROOT to run the real-data tests",
)


def test_short_dann_run_on_photo_to_art_painting(tmp_path):
    config = config_lib.load_config(
        os.path.join(os.path.dirname(__file__), "..", "configs", "pacs_dann.py")
    )
    overrides = {
        "data.root": ROOT,
        "data.cache_dir": str(tmp_path / "cache"),
        "data.validation": "",
        "data.resize": "72",  # far smaller than the seed's 256/224 to keep the suite fast
        "data.crop": "63",  # the smallest input AlexNet's layers take
        "data.limit": "32",
        "model.pretrained": "none",
        "batch_size": "16",
        "epochs": "2",
        "parallel.num_devices": "1",
        "log_every_epoch": "false",
    }
    config = config_lib.apply_overrides(config, overrides)
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir, progress=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert np.isfinite(row["class_loss"]) and np.isfinite(row["domain_loss_target"])
        assert row["grl_coefficient"] == pytest.approx(0.1)
    with open(os.path.join(workdir, "evaluation.json")) as f:
        evaluation = json.load(f)
    assert evaluation["class_names"] == [
        "dog",
        "elephant",
        "giraffe",
        "guitar",
        "horse",
        "house",
        "person",
    ]
    assert np.asarray(evaluation["confusion_matrix"]).sum() == 32  # every target image evaluated
    assert summary["final_target_accuracy"] == rows[-1]["target_accuracy"]

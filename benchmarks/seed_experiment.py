"""Times the whole seed experiment: data loading, training for N epochs, evaluation.

    python benchmarks/seed_experiment.py --root ../shared/data/PACS [--epochs 30]
        [--workdir DIR (kept; default: a temporary folder, deleted)] [--cache_dir DIR]
        [--config.KEY=VALUE ...]

Runs ``configs/pacs_dann.py`` (photo -> art_painting, AlexNet, batch 256, SGD 1e-3) through
``train_and_evaluate`` in a fresh run folder. Without ImageNet weights it trains from random init
(``model.pretrained=none``); the timing does not depend on the starting weights. Data loading is
timed twice: cold (decode, empty cache) and warm (from the cache the training run then uses).
The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402

from jaxdann import config as config_lib  # noqa: E402
from jaxdann.data import pacs  # noqa: E402
from jaxdann.training.trainer import train_and_evaluate  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "pacs_dann.py")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        _, overrides, flags = config_lib.parse_command_line(
            argv, "seed_experiment", ("root", "epochs", "workdir", "cache_dir")
        )
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = config_lib.load_config(CONFIG)
    config.model.pretrained = "none"
    config.data.validation = ""  # the seed's experiment: source and target only
    config.log_every_epoch = True
    config.epochs = int(flags.get("epochs", 30))
    config.data.root = flags.get("root", pacs.default_root())
    config = config_lib.apply_overrides(config, overrides)
    scratch = tempfile.mkdtemp(prefix="jaxdann-seed-")
    cache_dir = flags.get("cache_dir") or os.path.join(scratch, "cache")
    config.data.cache_dir = cache_dir
    workdir = flags.get("workdir") or os.path.join(scratch, "run")

    names = [config.data.source, config.data.target]
    started = time.perf_counter()
    pacs.load_domains(config.data.root, names, cache_dir=cache_dir, progress=False)
    cold_s = time.perf_counter() - started

    started = time.perf_counter()
    summary = train_and_evaluate(config, workdir, progress=False)
    total_s = time.perf_counter() - started
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f]
    result = {
        "benchmark": "seed_experiment",
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "dtype": config.model.dtype,
        "checkpoint_every_epochs": config.checkpoint_every_epochs,
        "cold_data_load_s": round(cold_s, 2),
        "run_s": round(total_s, 2),  # warm data load + compile + training + evaluation + files
        "first_epoch_s": epochs[0]["epoch_time_s"],  # includes compilation
        "later_epoch_s_mean": round(
            sum(e["epoch_time_s"] for e in epochs[1:]) / max(len(epochs) - 1, 1), 3
        ),
        "final_target_accuracy": summary["final_target_accuracy"],
        "final_source_accuracy": summary["final_source_accuracy"],
    }
    result["cold_total_s"] = round(cold_s + total_s, 2)
    if not flags.get("workdir"):
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

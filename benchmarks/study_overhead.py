"""The fixed cost of one short run inside a study (a sweep cell), per run and shared.

    python benchmarks/study_overhead.py [--cells 8] [--epochs 1]

Runs the same cells of the embedded demo (1 epoch each, learning rates differing) twice, on the
data loaded once and with the sweep's on-disk compilation cache:

- ``per run``: every run on its own, as ``python -m jaxdann.train`` would run it: its own
  compiled functions (from the on-disk cache), figures and a checkpoint per run;
- ``study``: one :class:`jaxdann.training.trainer.Study` shared by the runs, no per-run figures,
  no checkpoints (what ``jaxdann.sweep`` and ``jaxdann.pairs`` do for runs of at most
  ``sweep.SHORT_EPOCHS`` epochs).

Prints the median wall time of a run (the first run, which compiles, left out), the part of it
spent training, and the ratio per run / study.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from jaxdann import config as config_lib  # noqa: E402
from jaxdann.sweep import enable_compilation_cache  # noqa: E402
from jaxdann.training import feed as feeds  # noqa: E402
from jaxdann.training.trainer import Study, train_and_evaluate  # noqa: E402


def _runs(mode: str, config, data, root: str, cells: int) -> list[tuple[float, float]]:
    """(wall seconds, training seconds) of each run."""
    study = Study() if mode == "study" else None
    measured = []
    for index in range(cells):
        run = copy.deepcopy(config)
        run.optimizer.learning_rate = 0.01 * (index + 1)
        if study is not None:
            run.checkpoint_every_epochs = 0
        started = time.perf_counter()
        summary = train_and_evaluate(
            run, os.path.join(root, f"{mode}_{index}"), data=data, progress=False, study=study
        )
        measured.append((time.perf_counter() - started, summary["train_time_s"]))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    config = config_lib.demo_config()
    config.epochs, config.log_every_epoch = args.epochs, False
    data = feeds.load_shard(config, (0, 1))
    results = {}
    with tempfile.TemporaryDirectory() as root:
        enable_compilation_cache(os.path.join(root, ".jax_cache"))
        for mode in ("per run", "study"):
            runs = _runs(mode, config, data, root, args.cells)[1:]
            wall = statistics.median(w for w, _ in runs)
            train = statistics.median(t for _, t in runs)
            results[mode] = {"wall_s": round(wall, 3), "train_s": round(train, 3)}
            print(f"{mode:>8}: {wall:.3f} s a run ({train:.3f} s of it training)")
    ratio = results["per run"]["wall_s"] / results["study"]["wall_s"]
    print(f"per run / study: {ratio:.2f}x")
    print(json.dumps({"cells": args.cells, "epochs": args.epochs, **results}))


if __name__ == "__main__":
    main()

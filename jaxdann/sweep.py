"""The seed's learning-rate x optimizer grid, selected on held-out data, with heat maps.

    python -m jaxdann.sweep --config configs/pacs_dann.py --workdir runs/grid \\
        --learning_rates 0.01,0.001,0.00001 --optimizers sgd,adam,rmsprop \\
        [--adaptations none,dann] [--config.KEY=VALUE ...]

``--adaptations`` defaults to the config's ``adaptation``; with both, every output below gets
the adaptation as a suffix (``heatmap_validation_dann.png``, ``best_curves_none.png``).

Every cell is an ordinary run folder under the sweep folder (resumable, with its curves). The
best cell is chosen by validation accuracy: data that is neither the training source nor the
target (PACS: held-out domains; the demo: a held-out part of the source). Target accuracy is
reported, and drawn as an oracle heat map, but never used to choose. Rerunning the same command
skips finished cells and resumes interrupted ones. Data are loaded once for the whole grid, and
the compiled step is shared by cells that differ only in learning rate.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import shutil
import sys
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

from jaxdann import config as config_lib
from jaxdann import feed as feeds
from jaxdann import parallel, plots, run_folder
from jaxdann.optim import OPTIMIZERS

__all__ = [
    "run_grid",
    "run_cell",
    "enable_compilation_cache",
    "join_processes",
    "main",
    "RESULT_COLUMNS",
]

RESULT_COLUMNS = (
    "adaptation",
    "optimizer",
    "learning_rate",
    "train_accuracy",
    "validation_accuracy",
    "target_accuracy",
    "status",
    "run_folder",
)


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache: a recompiled, identical step is read, not rebuilt."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # the user chose one
    directory = os.path.abspath(directory)
    if jax.config.jax_compilation_cache_dir != directory:
        jax.config.update("jax_compilation_cache_dir", directory)
        # A cache this process has already opened (an earlier sweep in the same Python session)
        # would otherwise keep writing to its old directory.
        compilation_cache.reset_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def join_processes(config, tool: str) -> bool:
    """Joins the other processes of a multi-host run (if any); True where this one reports.

    Every process trains every run (each run's mesh spans all of them); only process 0 prints
    and writes the tool's own tables and figures, as only it writes a run's files.
    """
    parallel.maybe_initialize_distributed(config.parallel.distributed)
    if config.data.shard_per_host and jax.process_count() > 1:
        raise config_lib.ConfigError(
            f"{tool} loads the data once for all its runs, so config key data.shard_per_host "
            f"cannot be true on {jax.process_count()} processes; set it to false (every process "
            "then holds all of the data)."
        )
    return jax.process_index() == 0


def run_cell(config, workdir: str, data) -> tuple[dict | None, str]:
    """Trains one run unless its summary exists; a diverged run is recorded, not fatal.

    A folder holding a run with other settings is an error (``run_folder.check_workdir``), never
    reported as this config's result.
    """
    from jaxdann.trainer import TrainingDiverged, train_and_evaluate

    run_folder.check_workdir(config, workdir)
    if data is not None:  # a finished cell counts only if it read this data, wherever from
        sharded = bool(config.data.shard_per_host)
        run_folder.check_data(workdir, feeds.data_fingerprints(data, sharded=sharded))
    summary_path = os.path.join(workdir, "summary.json")
    if os.path.exists(summary_path):
        fix = "delete it and rerun: the cell finishes again (from its last checkpoint, if any)"
        summary = run_folder.read_json(summary_path, fix=fix)
        if summary.get("epochs") == config.epochs:
            return summary, "done earlier"
    try:
        return train_and_evaluate(config, workdir, data=data, progress=False), "trained"
    except TrainingDiverged as error:
        if jax.process_index() == 0:
            print(f"  {workdir}: {error}")
        return None, "diverged"


def _cell_name(adaptation: str, optimizer: str, learning_rate: float) -> str:
    return f"{adaptation}_{optimizer}_lr{learning_rate:g}"


def run_grid(
    config,
    workdir: str,
    learning_rates: Sequence[float],
    optimizers: Sequence[str],
    adaptations: Sequence[str],
) -> list[dict]:
    """Trains every (adaptation, optimizer, learning rate) cell; writes results and heat maps."""
    reports = join_processes(config, "jaxdann.sweep")
    os.makedirs(workdir, exist_ok=True)
    enable_compilation_cache(os.path.join(workdir, ".jax_cache"))
    if config.data.validation in config_lib.NO_VALIDATION:
        raise config_lib.ConfigError(
            "the sweep selects on validation data, but config key data.validation is empty; "
            "name held-out domains (PACS) or use the demo's 'source_holdout'."
        )
    data = feeds.load_shard(config, (0, 1))  # every process holds all of it (join_processes)
    rows = []
    for adaptation in adaptations:
        for optimizer in optimizers:
            for learning_rate in learning_rates:
                cell = copy.deepcopy(config)
                cell.adaptation = adaptation
                cell.optimizer.name = optimizer
                cell.optimizer.learning_rate = float(learning_rate)
                config_lib.validate(cell)
                folder = os.path.join(workdir, _cell_name(adaptation, optimizer, learning_rate))
                if reports:
                    print(f"cell {adaptation} {optimizer} lr={learning_rate:g} -> {folder}")
                summary, status = run_cell(cell, folder, data)
                summary = summary or {}
                rows.append(
                    {
                        "adaptation": adaptation,
                        "optimizer": optimizer,
                        "learning_rate": float(learning_rate),
                        "train_accuracy": summary.get("final_source_accuracy", math.nan),
                        "validation_accuracy": summary.get("validation_accuracy", math.nan),
                        "target_accuracy": summary.get("final_target_accuracy", math.nan),
                        "status": status,
                        "run_folder": folder,
                    }
                )
                if reports:
                    _write_csv(rows, workdir)  # after every cell: a long grid shows progress
    if reports:
        _write_results(rows, workdir, learning_rates, optimizers, adaptations)
    return rows


def _write_csv(rows, workdir) -> None:
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_results(rows, workdir, learning_rates, optimizers, adaptations) -> None:
    columns = [f"{lr:g}" for lr in learning_rates]
    for adaptation in adaptations:
        cells = [row for row in rows if row["adaptation"] == adaptation]
        suffix = "" if len(adaptations) == 1 else f"_{adaptation}"

        def grid(key, cells=cells):
            values = np.full((len(optimizers), len(learning_rates)), np.nan)
            for row in cells:
                i = optimizers.index(row["optimizer"])
                j = list(learning_rates).index(row["learning_rate"])
                values[i, j] = row[key]
            return values

        label = f"adaptation={adaptation}"
        for key, name, title in (
            ("train_accuracy", "heatmap_train", "train (source) accuracy"),
            ("validation_accuracy", "heatmap_validation", "validation accuracy (selects)"),
            ("target_accuracy", "heatmap_target_oracle", "target accuracy (oracle, not used)"),
        ):
            plots.plot_heatmap(
                grid(key),
                optimizers,
                columns,
                f"{title}\n{label}",
                os.path.join(workdir, f"{name}{suffix}.png"),
            )
        scored = [row for row in cells if np.isfinite(row["validation_accuracy"])]
        if not scored:
            print(f"{label}: no cell finished with a validation accuracy")
            continue
        best = max(scored, key=lambda row: row["validation_accuracy"])
        curves = os.path.join(best["run_folder"], "curves.png")
        if os.path.exists(curves):
            shutil.copyfile(curves, os.path.join(workdir, f"best_curves{suffix}.png"))
        print(
            f"{label}: best by validation is {best['optimizer']} lr={best['learning_rate']:g} "
            f"(validation {best['validation_accuracy']:.4f}, train {best['train_accuracy']:.4f}); "
            f"its target accuracy is {best['target_accuracy']:.4f}"
        )


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(value) for value in text.split(",") if value]
    except ValueError:
        raise config_lib.ConfigError(f"--{flag}={text}: expected numbers like 0.01,0.001") from None
    if not values or any(value <= 0 for value in values):
        raise config_lib.ConfigError(f"--{flag}={text}: expected positive numbers")
    return values


def _names(text: str, flag: str, valid: Sequence[str]) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in valid]
    if not names or wrong:
        raise config_lib.ConfigError(f"--{flag}={text}: choose from {', '.join(valid)}")
    return names


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    flags = ("workdir", "learning_rates", "optimizers", "adaptations")
    try:
        config, _, given = config_lib.config_from_command_line(
            argv, "jaxdann.sweep", flags, required=("workdir",)
        )
        learning_rates = _floats(
            given.get("learning_rates", "0.01,0.001,0.00001"), "learning_rates"
        )
        optimizers = _names(given.get("optimizers", "sgd,adam,rmsprop"), "optimizers", OPTIMIZERS)
        adaptations = _names(
            given.get("adaptations", config.adaptation), "adaptations", ("none", "dann")
        )
        run_grid(config, given["workdir"], learning_rates, optimizers, adaptations)
    except (ValueError, OSError) as error:  # ConfigError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return config_lib.exit_code(error)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; rerun the same command: finished cells are skipped, the "
            "interrupted one resumes from its last checkpoint (or restarts, if it saved none)",
            file=sys.stderr,
        )
        return config_lib.INTERRUPTED
    return 0


if __name__ == "__main__":
    config_lib.exit_process(main())

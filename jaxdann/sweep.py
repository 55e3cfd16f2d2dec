"""The seed's learning-rate x optimizer grid, selected on held-out data, with heat maps.

    python -m jaxdann.sweep --config configs/pacs_dann.py --workdir runs/grid \\
        --learning_rates 0.01,0.001,0.00001 --optimizers sgd,adam,rmsprop \\
        [--adaptations NAME,...] [--config.KEY=VALUE ...]

``--adaptations`` defaults to the config's ``adaptation``; with several, every output below gets
the adaptation as a suffix (``heatmap_validation_<adaptation>.png``,
``best_curves_<adaptation>.png``).

Every cell is an ordinary run folder under the sweep folder (without figures or, for cells of
at most ``SHORT_EPOCHS`` epochs, checkpoints unless ``--cell_figures`` / ``--cell_checkpoints``
ask for them; a cut cell without checkpoints restarts). The
best cell is chosen by validation accuracy: data that is neither the training source nor the
target (PACS: held-out domains; the demo: a held-out part of the source). Target accuracy is
reported, and drawn as an oracle heat map, but never used to choose. ``results.csv`` also has
a column per validator (:mod:`jaxdann.validators`: scores computed without target labels), and
``validators.csv`` says, for each validator, the cell it picks among all cells (and, with several
adaptations, among each adaptation's), that cell's target accuracy, the best target accuracy of
the cells it could pick (those with a score for it: the oracle) and the regret, their
difference. Rerunning the same command skips finished cells and resumes interrupted ones; a
rerun with another grid adds its cells, and ``results.csv`` and the heat maps hold every
finished cell in the folder. Data are loaded once for the whole grid, and the compiled step is
shared by cells that differ only in learning rate.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

from jaxdann import config as config_lib
from jaxdann import plots
from jaxdann.errors import UserError, exit_code, is_user_error
from jaxdann.methods import METHODS, get_method
from jaxdann.training import feed as feeds
from jaxdann.training import parallel, run_folder
from jaxdann.training.model_setup import read_pretrained
from jaxdann.training.optim import OPTIMIZERS
from jaxdann.training.run_folder import held
from jaxdann.training.trainer import Study
from jaxdann.validators import VALIDATORS, is_better

__all__ = [
    "run_grid",
    "run_cell",
    "enable_compilation_cache",
    "join_processes",
    "method_label",
    "parse_names",
    "main",
    "RESULT_COLUMNS",
    "SELECTION_COLUMNS",
    "select_by_validators",
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_OPTIMIZERS",
]

RESULT_COLUMNS = (
    "adaptation",
    "optimizer",
    "learning_rate",
    "train_accuracy",
    "validation_accuracy",
    "target_accuracy",
    *VALIDATORS,
    "status",
    "run_folder",
)
# validators.csv: what each validator picks; target accuracy is reported, never used to pick.
SELECTION_COLUMNS = (
    "validator",
    "among",
    "picked",
    "score",
    "target_accuracy",
    "oracle",
    "oracle_target_accuracy",
    "regret",
)
DEFAULT_LEARNING_RATES = "0.01,0.001,0.00001"
DEFAULT_OPTIMIZERS = "sgd,adam,rmsprop"
DONE_EARLIER = "done earlier"
# The figures the sweep writes per adaptation (file name, value, title).
_HEATMAPS = (
    ("heatmap_train", "train_accuracy", "train (source) accuracy"),
    ("heatmap_validation", "validation_accuracy", "validation accuracy (selects)"),
    ("heatmap_target_oracle", "target_accuracy", "target accuracy (oracle, not used)"),
)


def method_label(name: str) -> str:
    """The registered method's display name; an unregistered name (a folder written by a method
    this installation lacks) is shown as it is."""
    return METHODS[name].label if name in METHODS else name


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache: a recompiled, identical step is read, not rebuilt."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # the user chose one
    directory = os.path.abspath(directory)
    if jax.config.jax_compilation_cache_dir != directory:
        jax.config.update("jax_compilation_cache_dir", directory)
        # A cache this process has already opened (an earlier sweep in the same Python process)
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


def _finished_summary(config, workdir: str) -> dict | None:
    """The run's summary if it finished ``config.epochs`` epochs, else None."""
    summary_path = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary_path):
        return None
    fix = "delete it and rerun: the cell finishes again (from its last checkpoint, if any)"
    summary = run_folder.read_json(summary_path, fix=fix)
    return summary if summary.get("epochs") == config.epochs else None


def _check_cell(config, workdir: str, fingerprints: list[dict] | None) -> None:
    """Refuses a folder holding a run with other settings, or trained on other data, or one
    that would be extended on a schedule that follows the run's length."""
    run_folder.check_workdir(config, workdir)
    if fingerprints is not None:  # a finished cell counts only if it read this data
        run_folder.check_data(workdir, fingerprints)
    _check_extension(config, workdir)


def _check_extension(config, workdir: str) -> None:
    """A cell resumed with more epochs than it began with would have trained its first epochs
    on the annealed learning rate or the ``dann`` reversal ramp of a shorter run: a different
    cell from a fresh one of the same length, side by side with them in the tables."""
    by_length = config.optimizer.schedule == "annealed" or config.grl.schedule == "dann"
    if not by_length or not run_folder.saved_epochs(workdir):
        return
    began = run_folder.read_json(os.path.join(workdir, "config.json")).get("epochs")
    if began is not None and began != config.epochs:
        raise config_lib.ConfigError(
            f"{workdir} holds a cell of {began} epochs; extending it to {config.epochs} would "
            "give its first epochs the schedule of a shorter run (optimizer.schedule=annealed "
            f"or grl.schedule=dann). Rerun with --config.epochs={began}, or use a new --workdir."
        )


def _fingerprints(config, data) -> list[dict] | None:
    """What ``data`` is, wherever it was read from; collective on several processes."""
    if data is None:
        return None
    return feeds.data_fingerprints(data, sharded=bool(config.data.shard_per_host))


def run_cell(
    config,
    workdir: str,
    data,
    announce: Callable[[bool], None] | None = None,
    study: Study | None = None,
) -> tuple[dict | None, str]:
    """Trains one run unless its summary exists; a diverged run is recorded, not fatal.

    A folder holding a run with other settings is an error (``run_folder.check_workdir``), never
    reported as this config's result. ``announce(finished_earlier)`` is called once the folder
    has been checked, before any training (to print what happens next). ``study``: what the
    cells of the study share (:class:`~jaxdann.training.trainer.Study`).
    """
    from jaxdann.errors import TrainingDiverged
    from jaxdann.training.trainer import train_and_evaluate  # looked up at call time (tests)

    _check_cell(config, workdir, _fingerprints(config, data))
    summary = _finished_summary(config, workdir)
    if announce is not None:
        announce(summary is not None)
    if summary is not None:
        return summary, DONE_EARLIER
    try:
        summary = train_and_evaluate(config, workdir, data=data, progress=False, study=study)
        return summary, "trained"
    except TrainingDiverged as error:
        if jax.process_index() == 0:
            print(f"  {workdir}: {error}")
        return None, "diverged"


SHORT_EPOCHS = 5  # cells of at most this many epochs save no checkpoint by default
CELL_CHECKPOINTS = ("auto", "yes", "no")
STUDY_FLAGS = ("cell_figures", "cell_checkpoints")


def study_settings(given: dict) -> tuple[bool, str]:
    """``(cell_figures, cell_checkpoints)`` from the ``--cell_figures`` and
    ``--cell_checkpoints`` flags of sweep and pairs."""
    figures = str(given.get("cell_figures", "no")).lower()
    if figures not in ("yes", "no", "true", "false"):
        raise config_lib.ConfigError(f"--cell_figures {figures}: use yes or no.")
    checkpoints = str(given.get("cell_checkpoints", "auto")).lower()
    if checkpoints not in CELL_CHECKPOINTS:
        raise config_lib.ConfigError(
            f"--cell_checkpoints {checkpoints}: use one of {', '.join(CELL_CHECKPOINTS)}."
        )
    return figures in ("yes", "true"), checkpoints


def with_cell_checkpoints(config, policy: str):
    """``config`` with the study's checkpoint policy: ``no`` saves none, ``auto`` none for
    cells of at most :data:`SHORT_EPOCHS` epochs (a cut cell then restarts; a finished one is
    skipped by its summary), ``yes`` what the config says."""
    if policy == "no" or (policy == "auto" and int(config.epochs) <= SHORT_EPOCHS):
        config = copy.deepcopy(config)
        config.checkpoint_every_epochs = 0
    return config


def _cell_name(adaptation: str, optimizer: str, learning_rate: float) -> str:
    return f"{adaptation}_{optimizer}_lr{learning_rate:g}"


def _cell_config(config, adaptation: str, optimizer: str, learning_rate: float):
    cell = copy.deepcopy(config)
    cell.adaptation = adaptation
    cell.optimizer.name = optimizer
    cell.optimizer.learning_rate = float(learning_rate)
    return cell


def _row(adaptation, optimizer, learning_rate, summary, status, folder) -> dict:
    summary = summary or {}
    validation = summary.get("validation_accuracy")
    scores = summary.get("validators") or {}  # none in a summary from an older jaxdann
    validator_columns = {
        name: math.nan if scores.get(name) is None else scores[name] for name in VALIDATORS
    }
    return {
        "adaptation": adaptation,
        "optimizer": optimizer,
        "learning_rate": float(learning_rate),
        "train_accuracy": summary.get("final_source_accuracy", math.nan),
        "validation_accuracy": math.nan if validation is None else validation,
        "target_accuracy": summary.get("final_target_accuracy", math.nan),
        **validator_columns,
        "status": status,
        "run_folder": folder,
    }


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def run_grid(
    config,
    workdir: str,
    learning_rates: Sequence[float],
    optimizers: Sequence[str],
    adaptations: Sequence[str],
    notes: Sequence[str] = (),
    *,
    cell_figures: bool = False,
    cell_checkpoints: str = "auto",
) -> list[dict]:
    """The study in ``workdir``, which it holds while it runs (one study per folder; see
    :func:`_run_grid`)."""
    parallel.maybe_initialize_distributed(config.parallel.distributed)  # before any device
    with held(workdir, is_main=jax.process_index() == 0):
        study = Study(figures=cell_figures)
        grid = (learning_rates, optimizers, adaptations)
        return _run_grid(config, workdir, *grid, notes, study, cell_checkpoints)


def _run_grid(
    config,
    workdir: str,
    learning_rates: Sequence[float],
    optimizers: Sequence[str],
    adaptations: Sequence[str],
    notes: Sequence[str] = (),
    study: Study | None = None,
    cell_checkpoints: str = "auto",
) -> list[dict]:
    """Trains every (adaptation, optimizer, learning rate) cell; writes results and heat maps.

    Repeated values run once. Returns the rows of ``results.csv``: this grid's cells, then the
    finished cells of earlier grids in the same folder (same settings and data), which the
    table, the heat maps and the choice of the best cell include. ``notes`` are printed first.
    """
    reports = join_processes(config, "jaxdann.sweep")
    learning_rates = _unique(float(value) for value in learning_rates)
    optimizers, adaptations = _unique(optimizers), _unique(adaptations)
    for adaptation in adaptations:
        get_method(adaptation)  # an unknown name: a ConfigError listing the registered ones
    if config.data.validation in config_lib.NO_VALIDATION:
        raise config_lib.ConfigError(
            "the sweep selects on validation data, but config key data.validation is empty; "
            "name held-out domains (PACS) or use the demo's 'source_holdout'."
        )
    cells = [
        (adaptation, optimizer, learning_rate)
        for adaptation in adaptations
        for optimizer in optimizers
        for learning_rate in learning_rates
    ]
    for cell in cells:
        config_lib.validate(_cell_config(config, *cell))
    read_pretrained(config)  # a missing or unusable weights file: one line now, not after the data
    os.makedirs(workdir, exist_ok=True)
    enable_compilation_cache(os.path.join(workdir, ".jax_cache"))
    if reports:
        for note in notes:
            print(note)
        print(
            f"grid of {len(cells)} cells in {workdir}: adaptations {', '.join(adaptations)}; "
            f"optimizers {', '.join(optimizers)}; learning rates "
            f"{', '.join(f'{lr:g}' for lr in learning_rates)}"
        )
    data = feeds.load_shard(config, (0, 1))  # every process holds all of it (join_processes)
    folders = {os.path.join(workdir, _cell_name(*cell)) for cell in cells}
    fingerprints = _fingerprints(config, data)  # on every process: collective
    earlier = _earlier_cells(config, workdir, fingerprints, folders) if reports else []
    rows = []
    for number, cell in enumerate(cells, 1):
        folder = os.path.join(workdir, _cell_name(*cell))
        label = f"cell {number}/{len(cells)}: {cell[0]} {cell[1]} lr={cell[2]:g}"

        def announce(done, label=label, folder=folder):
            if reports:
                print(f"{label}: {DONE_EARLIER}" if done else f"{label} -> {folder}")

        cell_config = with_cell_checkpoints(_cell_config(config, *cell), cell_checkpoints)
        summary, status = run_cell(cell_config, folder, data, announce, study)
        rows.append(_row(*cell, summary, status, folder))
        if reports:
            _write_csv(rows + earlier, workdir)  # after every cell: a long grid shows progress
    rows += earlier
    if reports:
        _write_csv(rows, workdir)
        _write_results(rows, workdir)
        _write_selection(rows, workdir)
    return rows


def _earlier_cells(config, workdir: str, fingerprints, skip: set[str]) -> list[dict]:
    """Rows for the finished cells in ``workdir`` outside this grid (``skip``) whose settings,
    data and epochs match this sweep's; any other cell folder is named and left out."""
    rows, left_out = [], []
    for name in sorted(os.listdir(workdir)):
        folder = os.path.join(workdir, name)
        config_path = os.path.join(folder, "config.json")
        if folder in skip or not os.path.exists(os.path.join(folder, "summary.json")):
            continue
        if not os.path.exists(config_path):
            continue
        try:
            cell = _cell_of(run_folder.read_json(config_path, fix=_FIX_CELL))
            if cell is None or name != _cell_name(*cell):
                continue  # a folder the sweep did not name
            cell_config = _cell_config(config, *cell)
            _check_cell(cell_config, folder, fingerprints)
            summary = _finished_summary(cell_config, folder)
        except UserError as error:  # a damaged earlier cell stops nothing; it is named
            left_out.append(f"  {name}: {error}")
            continue
        if summary is None:
            left_out.append(f"  {name}: trained for other than epochs={config.epochs}")
            continue
        rows.append(_row(*cell, summary, DONE_EARLIER, folder))
    if rows:
        print(
            f"{len(rows)} finished cell(s) of earlier grids in {workdir} "
            "are kept in results.csv and the heat maps"
        )
    if left_out:
        print("cells in the folder left out of results.csv:", *left_out, sep="\n")
    return rows


_FIX_CELL = "restore the file or delete the cell folder (a rerun of its grid trains it again)"


def _cell_of(settings) -> tuple[str, str, float] | None:
    """A cell's (adaptation, optimizer, learning rate) from its config.json; None if it has none."""
    try:
        optimizer = settings["optimizer"]
        return settings["adaptation"], optimizer["name"], float(optimizer["learning_rate"])
    except (KeyError, TypeError, ValueError):
        return None


def _write_csv(rows, workdir) -> None:
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def select_by_validators(rows: list[dict]) -> list[dict]:
    """Rows of ``validators.csv``: for each validator, the finished cell with its best score
    among all ``rows`` (``among`` "all") and, with several adaptations, among each one's cells;
    that cell's target accuracy, the best target accuracy among the same cells (the oracle:
    the finished cells that have a score for this validator, those it could pick) and the
    regret (oracle minus picked). Ties go to the earlier row; a validator no cell has (DEV
    without a source hold-out) gets no row."""
    adaptations = _unique(row["adaptation"] for row in rows)
    groups = [("all", rows)]
    if len(adaptations) > 1:
        groups += [
            (name, [row for row in rows if row["adaptation"] == name]) for name in adaptations
        ]
    selection = []
    for among, cells in groups:
        finished = [row for row in cells if np.isfinite(row["target_accuracy"])]
        for name in VALIDATORS:
            scored = [row for row in finished if np.isfinite(row[name])]
            if not scored:
                continue
            oracle = max(scored, key=lambda row: row["target_accuracy"])
            picked = scored[0]
            for row in scored[1:]:
                if is_better(name, row[name], picked[name]):
                    picked = row
            selection.append(
                {
                    "validator": name,
                    "among": among,
                    "picked": os.path.basename(picked["run_folder"]),
                    "score": picked[name],
                    "target_accuracy": picked["target_accuracy"],
                    "oracle": os.path.basename(oracle["run_folder"]),
                    "oracle_target_accuracy": oracle["target_accuracy"],
                    "regret": oracle["target_accuracy"] - picked["target_accuracy"],
                }
            )
    return selection


def _write_selection(rows, workdir) -> None:
    """``validators.csv`` (:func:`select_by_validators`), and a line per validator among all
    cells."""
    selection = select_by_validators(rows)
    with open(os.path.join(workdir, "validators.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SELECTION_COLUMNS)
        writer.writeheader()
        writer.writerows(selection)
    for row in selection:
        if row["among"] == "all":
            print(
                f"{row['validator']} picks {row['picked']}: target accuracy "
                f"{row['target_accuracy']:.4f}, regret {row['regret']:.4f} (oracle "
                f"{row['oracle']}, {row['oracle_target_accuracy']:.4f})"
            )


def _write_results(rows, workdir) -> None:
    """Heat maps over every optimizer and learning rate in ``rows``, per adaptation, and the
    best cell by validation accuracy."""
    adaptations = _unique(row["adaptation"] for row in rows)
    if len(adaptations) > 1:  # suffixed figures: an earlier single-adaptation grid's are stale
        for name, _, _ in (*_HEATMAPS, ("best_curves", None, None)):
            path = os.path.join(workdir, f"{name}.png")
            if os.path.exists(path):
                os.remove(path)
    for adaptation in adaptations:
        cells = [row for row in rows if row["adaptation"] == adaptation]
        suffix = "" if len(adaptations) == 1 else f"_{adaptation}"
        optimizers = _unique(row["optimizer"] for row in cells)
        learning_rates = sorted(_unique(row["learning_rate"] for row in cells), reverse=True)
        label = f"{method_label(adaptation)} ({adaptation})"
        for name, key, title in _HEATMAPS:
            values = np.full((len(optimizers), len(learning_rates)), np.nan)
            for row in cells:
                i = optimizers.index(row["optimizer"])
                values[i, learning_rates.index(row["learning_rate"])] = row[key]
            plots.plot_heatmap(
                values,
                optimizers,
                [f"{lr:g}" for lr in learning_rates],
                f"{title}\n{label}",
                os.path.join(workdir, f"{name}{suffix}.png"),
            )
        _report_best(cells, workdir, suffix, label)


def _report_best(cells, workdir, suffix, label) -> None:
    scored = [row for row in cells if np.isfinite(row["validation_accuracy"])]
    if not scored:
        print(f"{label}: no cell finished with a validation accuracy")
        return
    best = max(scored, key=lambda row: row["validation_accuracy"])
    metrics = os.path.join(best["run_folder"], "metrics.jsonl")
    if os.path.exists(metrics):  # drawn here, once: cells draw no figures of their own
        title = f"best by validation: {best['optimizer']} lr={best['learning_rate']:g}, {label}"
        plots.plot_curves(metrics, os.path.join(workdir, f"best_curves{suffix}.png"), title)
    print(
        f"{label}: best by validation is {best['optimizer']} lr={best['learning_rate']:g} "
        f"(validation {best['validation_accuracy']:.4f}, train {best['train_accuracy']:.4f}); "
        f"its target accuracy is {best['target_accuracy']:.4f}"
    )


def parse_floats(text: str, flag: str) -> tuple[list[float], list[str]]:
    """Positive numbers from ``a,b,...``, each value once; the notes say what was dropped."""
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise config_lib.ConfigError(f"--{flag}={text}: expected numbers like 0.01,0.001") from None
    if not values or any(not value > 0 for value in values):
        raise config_lib.ConfigError(f"--{flag}={text}: expected positive numbers")
    return _unique(values), _repeat_notes(values, flag, lambda value: f"{value:g}")


def parse_names(text: str, flag: str, valid: Sequence[str]) -> tuple[list[str], list[str]]:
    """Names from ``a,b,...`` (lower case), each once; one outside ``valid`` is a ConfigError."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in valid]
    if not names or wrong:
        raise config_lib.ConfigError(f"--{flag}={text}: choose from {', '.join(valid)}")
    return _unique(names), _repeat_notes(names, flag, str)


def _repeat_notes(values: list, flag: str, show: Callable) -> list[str]:
    repeated = _unique(value for index, value in enumerate(values) if value in values[:index])
    return [
        f"--{flag}: {show(value)} is given {values.count(value)} times; it runs once"
        for value in repeated
    ]


def _help() -> str:
    return f"""{__doc__}
flags:
  --workdir DIR          the sweep folder (required); a rerun there skips finished cells
  --learning_rates LIST  comma-separated (default: {DEFAULT_LEARNING_RATES})
  --optimizers LIST      from {", ".join(OPTIMIZERS)} (default: {DEFAULT_OPTIMIZERS})
  --adaptations LIST     from {", ".join(METHODS.names())} (default: the config's adaptation)
  --cell_figures yes|no  curves.png and confusion.png in every cell (default: no)
  --cell_checkpoints auto|yes|no
                         checkpoints in the cells (default: auto, none for cells of at most
                         {SHORT_EPOCHS} epochs: a cut cell restarts, a finished one is skipped)
  --config FILE          a config file under configs/ (default: the digits demo)
  --config.KEY=VALUE     any config key, e.g. --config.epochs=5
"""


def _grid_from_flags(config, given: dict) -> tuple[list, list, list, list[str]]:
    """(learning rates, optimizers, adaptations, notes) from the flags, defaults filled in."""
    learning_rates, notes = parse_floats(
        given.get("learning_rates", DEFAULT_LEARNING_RATES), "learning_rates"
    )
    optimizers, more = parse_names(
        given.get("optimizers", DEFAULT_OPTIMIZERS), "optimizers", OPTIMIZERS
    )
    notes += more
    adaptations, more = parse_names(
        given.get("adaptations", config.adaptation), "adaptations", METHODS.names()
    )
    notes += more
    for flag, default in (
        ("learning_rates", DEFAULT_LEARNING_RATES),
        ("optimizers", DEFAULT_OPTIMIZERS),
        ("adaptations", f"{config.adaptation} (the config's adaptation)"),
    ):
        if flag not in given:
            notes.append(f"--{flag} not given: the default, {default}")
    return learning_rates, optimizers, adaptations, notes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(_help())
        return 0
    flags = ("workdir", "learning_rates", "optimizers", "adaptations", *STUDY_FLAGS)
    try:
        config, _, given = config_lib.config_from_command_line(
            argv, "jaxdann.sweep", flags, required=("workdir",)
        )
        learning_rates, optimizers, adaptations, notes = _grid_from_flags(config, given)
        figures, checkpoints = study_settings(given)
        grid = (learning_rates, optimizers, adaptations)
        run_grid(
            config,
            given["workdir"],
            *grid,
            notes,
            cell_figures=figures,
            cell_checkpoints=checkpoints,
        )
    except KeyboardInterrupt:
        print(
            "\ninterrupted; rerun the same command: finished cells are skipped, the "
            "interrupted one resumes from its last checkpoint (or restarts, if it saved none)",
            file=sys.stderr,
        )
        return config_lib.INTERRUPTED
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    return 0


if __name__ == "__main__":
    config_lib.exit_process(main())

"""Adaptation methods on every task of a dataset's domains, over several seeds.

    python -m jaxdann.pairs --config configs/pacs_dann.py --workdir runs/pairs --seeds 0,1,2 \\
        [--domains photo,art_painting,cartoon,sketch] [--adaptations NAME,...] \\
        [--protocol pairs|leave_one_out] [--config.KEY=VALUE ...]

The tasks (``--protocol``): ``pairs``, every ordered pair of the domains (one source, one target);
``leave_one_out``, each domain the target with all the others as sources (their union), as in
DomainBed's PACS table. Any dataset with domains serves (``data.name``; ``--domains`` defaults to
all of its domains that ``data.root`` holds). Reports mean +- sample std of the final target
accuracy per task and method, and the average over tasks, as published domain-adaptation tables
do; adversarial training is unstable, so the spread matters as much as the mean. Each run is an
ordinary, resumable run folder (``WORKDIR/<source>[+<source>...]_to_<target>/<adaptation>/
seed<N>``); rerunning skips finished ones. Writes ``pairs_runs.csv`` (one line per run; several
sources comma-separated) and ``pairs.md`` (the table); ``python -m jaxdann.report WORKDIR`` puts
the table's rows in a report.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np

from jaxdann import config as config_lib
from jaxdann.data import DATASETS
from jaxdann.data import pipeline as input_pipeline
from jaxdann.data.pacs import DOMAINS
from jaxdann.errors import exit_code, is_user_error
from jaxdann.methods import METHODS, get_method
from jaxdann.sweep import (
    SHORT_EPOCHS,
    STUDY_FLAGS,
    enable_compilation_cache,
    join_processes,
    method_label,
    parse_names,
    run_cell,
    study_settings,
    with_cell_checkpoints,
)
from jaxdann.training import feed as feeds
from jaxdann.training import parallel
from jaxdann.training.model_setup import read_pretrained
from jaxdann.training.run_folder import held
from jaxdann.training.trainer import Study

__all__ = [
    "PROTOCOLS",
    "run_pairs",
    "tasks",
    "task_folder",
    "summarize_pairs",
    "main",
    "DEFAULT_ADAPTATIONS",
    "RUNS_FILE",
    "TABLE_FILE",
]

# The baseline and the method the seed study compares; --adaptations chooses others.
DEFAULT_ADAPTATIONS = ("none", "dann")
DEFAULT_SEEDS = "0,1,2"
RUNS_FILE = "pairs_runs.csv"
TABLE_FILE = "pairs.md"
PROTOCOLS = ("pairs", "leave_one_out")


def tasks(domains: Sequence[str], protocol: str = "pairs") -> list[tuple[tuple[str, ...], str]]:
    """The (sources, target) tasks of ``protocol`` over ``domains``, in order: every ordered
    pair, or each domain the target of all the others."""
    if protocol == "pairs":
        return [((s,), t) for s in domains for t in domains if s != t]
    if protocol == "leave_one_out":
        return [(tuple(d for d in domains if d != t), t) for t in domains]
    raise config_lib.ConfigError(f"--protocol={protocol}: choose one of {', '.join(PROTOCOLS)}.")


def run_pairs(
    config,
    workdir: str,
    seeds: Sequence[int],
    domains: Sequence[str] | None = None,
    adaptations: Sequence[str] = DEFAULT_ADAPTATIONS,
    notes: Sequence[str] = (),
    *,
    protocol: str = "pairs",
    cell_figures: bool = False,
    cell_checkpoints: str = "auto",
):
    """The study in ``workdir``, which it holds while it runs (one study per folder; see
    :func:`_run_pairs`). ``domains``: None for all of the dataset's."""
    parallel.maybe_initialize_distributed(config.parallel.distributed)  # before any device
    with held(workdir, is_main=jax.process_index() == 0):
        study = (Study(figures=cell_figures), cell_checkpoints)
        plan = (domains, protocol)
        return _run_pairs(config, workdir, seeds, plan, adaptations, notes, study)


def task_folder(sources: Sequence[str], target: str) -> str:
    """The folder name of one task's runs: ``photo_to_sketch``, ``photo+cartoon_to_sketch``."""
    return f"{'+'.join(sources)}_to_{target}"


def _run_config(config, sources: Sequence[str], target: str, adaptation: str, seed: int):
    """The config of one run of the table."""
    run = copy.deepcopy(config)
    run.data.source, run.data.target = ",".join(sources), target
    run.data.validation = ""  # the table reports target accuracy only
    run.adaptation, run.seed = adaptation, int(seed)
    return run


def _study_tasks(config, domains: Sequence[str] | None, protocol: str) -> list:
    """The (sources, target) tasks, after the dataset has accepted each one's domains."""
    dataset = DATASETS.get(config.data.name)
    # Default: the dataset's domains that its root holds (a root with some of them serves).
    domains = list(domains) if domains else list(dataset.present_domains(config.data))
    if len(domains) < 2:
        raise config_lib.ConfigError(
            f"jaxdann.pairs needs at least two domains; the {dataset.name} dataset has "
            f"{', '.join(domains) or 'none'} (--domains, data.root)."
        )
    chosen = tasks(domains, protocol)
    for sources, target in chosen:
        try:
            dataset.check_settings(_run_config(config, sources, target, "none", 0).data)
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(
                f"jaxdann.pairs: the task {'+'.join(sources)} -> {target} is refused: {error}"
            ) from None
    return chosen


def _run_pairs(
    config,
    workdir: str,
    seeds: Sequence[int],
    plan: tuple[Sequence[str] | None, str] = (None, "pairs"),
    adaptations: Sequence[str] = DEFAULT_ADAPTATIONS,
    notes: Sequence[str] = (),
    study: tuple[Study, str] = (Study(), "auto"),
):
    """Trains every (task, adaptation, seed) of ``plan`` = (domains, protocol); returns the
    per-run rows.

    ``notes`` (about the flags) are printed first, by the process that reports."""
    for adaptation in adaptations:
        get_method(adaptation)  # an unknown name: a ConfigError listing the registered ones
    reports = join_processes(config, "jaxdann.pairs")  # refuses sharded data before any reading
    chosen = _study_tasks(config, *plan)  # reads data.root for the default domains
    read_pretrained(config)  # a missing or unusable weights file: one line now, not after the data
    for note in notes if reports else ():
        print(note)
    os.makedirs(workdir, exist_ok=True)
    enable_compilation_cache(os.path.join(workdir, ".jax_cache"))
    domains = list(dict.fromkeys(d for sources, target in chosen for d in (*sources, target)))
    loaded = feeds.load_everywhere(lambda: input_pipeline.load_domains(config, domains))
    rows = []
    for task in chosen:
        for adaptation in adaptations:
            for seed in seeds:
                rows.append(_run(config, workdir, loaded, task, adaptation, seed, study))
    if not reports:
        return rows
    with open(os.path.join(workdir, RUNS_FILE), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarize_pairs(rows, adaptations)
    with open(os.path.join(workdir, TABLE_FILE), "w") as f:
        f.write(table)
    print(table, end="")
    return rows


def _run(config, workdir, loaded: dict, task: tuple, adaptation: str, seed: int, study: tuple):
    """One run of the table (trained unless finished earlier): its row."""
    sources, target = task
    run = _run_config(config, sources, target, adaptation, seed)
    folder = os.path.join(workdir, task_folder(sources, target), adaptation, f"seed{seed}")
    label = f"{run.data.source} -> {target} {adaptation} seed {seed}"

    def announce(done):
        if jax.process_index() == 0:  # only process 0 prints
            print(f"{label}: done earlier" if done else label)

    data = input_pipeline.load_experiment_data(run, domains=loaded)
    run = with_cell_checkpoints(run, study[1])
    summary, status = run_cell(run, folder, data, announce, study[0])
    return {
        "source": run.data.source,
        "target": target,
        "adaptation": adaptation,
        "seed": int(seed),
        "target_accuracy": summary["final_target_accuracy"] if summary else math.nan,
        "status": status,
        "run_folder": folder,
    }


def _mean_std(values: list[float]) -> str:
    """Mean +- sample std of the finite values, saying how many runs diverged (NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "diverged" if values else "-"
    if len(finite) == 1:  # no spread to report
        text = f"{finite[0]:.4f}"
    else:
        text = f"{np.mean(finite):.4f} +- {float(np.std(finite, ddof=1)):.4f}"
    if len(finite) < len(values):
        text += f" ({len(finite)} of {len(values)}; {len(values) - len(finite)} diverged)"
    return text


def summarize_pairs(rows: list[dict], adaptations: Sequence[str] | None = None) -> str:
    """Markdown: one line per pair (mean +- std over seeds), then the average over pairs.

    One column per adaptation (``adaptations``, by default those in ``rows`` in order), headed
    by the method's label.
    """
    if adaptations is None:
        adaptations = list(dict.fromkeys(row["adaptation"] for row in rows))
    pairs = list(dict.fromkeys((row["source"], row["target"]) for row in rows))
    labels = [method_label(adaptation) for adaptation in adaptations]
    lines = [
        f"| source -> target | {' | '.join(labels)} | seeds |",
        "|---|" + "---|" * len(adaptations) + "---|",
    ]
    per_seed_average = {adaptation: {} for adaptation in adaptations}
    seeds = len({row["seed"] for row in rows})
    for source, target in pairs:
        cells = []
        for adaptation in adaptations:
            runs = [
                row
                for row in rows
                if (row["source"], row["target"], row["adaptation"]) == (source, target, adaptation)
            ]
            cells.append(_mean_std([row["target_accuracy"] for row in runs]))
            for row in runs:
                per_seed_average[adaptation].setdefault(row["seed"], []).append(
                    row["target_accuracy"]
                )
        lines.append(f"| {source} -> {target} | {' | '.join(cells)} | {seeds} |")
    # The average over pairs, computed per seed, then mean +- std over seeds.
    averages = [
        _mean_std([float(np.mean(v)) for v in per_seed_average[adaptation].values()])
        for adaptation in adaptations
    ]
    lines.append(f"| **average** | {' | '.join(averages)} | |")
    return "\n".join(lines) + "\n"


def _help() -> str:
    return f"""{__doc__}
flags:
  --workdir DIR        the pairs folder (required); a rerun there skips finished runs
  --seeds LIST         comma-separated integers (default: {DEFAULT_SEEDS})
  --domains LIST       at least two domains of the config's dataset (default: all of them
                       that data.root holds, e.g. PACS's {",".join(DOMAINS)})
  --protocol NAME      {" or ".join(PROTOCOLS)}: every ordered pair of the domains, or each
                       domain the target of all the others as sources (default: pairs)
  --adaptations LIST   from {", ".join(METHODS.names())} (default: {",".join(DEFAULT_ADAPTATIONS)})
  --cell_figures yes|no
                       curves.png and confusion.png in every run (default: no)
  --cell_checkpoints auto|yes|no
                       checkpoints in the runs (default: auto, none for runs of at most
                       {SHORT_EPOCHS} epochs: a cut run restarts, a finished one is skipped)
  --config FILE        a config file under configs/ (required in practice: the default
                       config is the digits demo, which has no domain pairs)
  --config.KEY=VALUE   any config key, e.g. --config.epochs=5
"""


def _parse_flags(given: dict) -> tuple[list[int], list[str], list[str], list[str]]:
    """(seeds, domains, adaptations, notes) from the flags, defaults filled in (no domains:
    all of the dataset's)."""
    try:
        seeds = [int(s) for s in given.get("seeds", DEFAULT_SEEDS).split(",") if s]
    except ValueError:
        raise config_lib.ConfigError(
            f"--seeds={given['seeds']}: expected integers like 0,1,2"
        ) from None
    domains = [d.strip() for d in given.get("domains", "").split(",") if d.strip()]
    if "domains" in given and (len(set(domains)) < 2 or len(set(domains)) != len(domains)):
        raise config_lib.ConfigError(
            f"--domains={given.get('domains')}: name at least two different domains, each once"
        )
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise config_lib.ConfigError(
            f"--seeds={given.get('seeds')}: name each seed once, each 0 or more"
        )
    tasks(["a", "b"], given.get("protocol", "pairs"))  # an unknown protocol: refused now
    adaptations, notes = parse_names(
        given.get("adaptations", ",".join(DEFAULT_ADAPTATIONS)), "adaptations", METHODS.names()
    )
    return seeds, domains, adaptations, notes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(_help())
        return 0
    try:
        config, _, given = config_lib.config_from_command_line(
            argv,
            "jaxdann.pairs",
            ("workdir", "seeds", "domains", "adaptations", "protocol", *STUDY_FLAGS),
            required=("workdir",),
        )
        seeds, domains, adaptations, notes = _parse_flags(given)
        figures, checkpoints = study_settings(given)
        run_pairs(
            config,
            given["workdir"],
            seeds,
            domains,
            adaptations,
            notes,
            protocol=given.get("protocol", "pairs"),
            cell_figures=figures,
            cell_checkpoints=checkpoints,
        )
    except KeyboardInterrupt:
        print(
            "\ninterrupted; rerun the same command: finished runs are skipped, the "
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

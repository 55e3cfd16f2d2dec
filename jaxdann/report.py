"""A results table like the seed's conclusion, from the files of run, sweep and pairs folders.

example:
    python -m jaxdann.report runs/source_only runs/dann runs/grid runs/pairs --output runs/report

A run folder (it has summary.json) gives one row. A sweep folder (results.csv, from
jaxdann.sweep) gives its best cell by validation accuracy for each adaptation. A pairs folder
(pairs_runs.csv, from jaxdann.pairs) gives one row per domain pair and adaptation, with the mean
over its seeds. Rows with the same method, settings and task are told apart by the config keys in
which their runs differ; the folder column says where each row comes from. Writes report.md and
report.csv into --output and prints where they went.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import sys

from jaxdann import config as config_lib
from jaxdann.errors import ConfigError, DamagedFile, exit_code, is_user_error
from jaxdann.pairs import task_folder
from jaxdann.sweep import method_label
from jaxdann.training.run_folder import read_json

__all__ = ["collect_rows", "format_markdown", "main", "COLUMNS"]

_RERUN = "restore it, or delete it and rerun that run's command, which writes it anew"

COLUMNS = (
    "method",
    "adaptation",
    "settings",
    "task",
    "train_accuracy",
    "target_accuracy",
    "validation_accuracy",
    "runs",
    "folder",
)
_MAX_DIFFERENCES = 3  # config keys named to tell rows apart; more are summarised


def _read_json(path: str):
    if not os.path.exists(path):
        raise DamagedFile(f"{path} is missing; {_RERUN}.")
    return read_json(path, fix=_RERUN)


def _read_csv(path: str, columns: tuple[str, ...]) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [column for column in columns if rows and column not in rows[0]]
    if missing:
        raise DamagedFile(f"{path} lacks the column(s) {', '.join(missing)}; {_RERUN}.")
    return rows


def _float(text) -> float:
    """A number from a CSV cell; empty or unreadable cells are NaN (shown as -)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _row(config: dict, folder: str, **values) -> dict:
    """A report row; ``_config`` (the flat config) tells rows apart, and is not written."""
    adaptation = config.get("adaptation", "?")
    optimizer = config.get("optimizer", {})
    settings = f"{optimizer.get('name', '?')} lr {_float(optimizer.get('learning_rate')):g}"
    data = config.get("data", {})
    return {
        "method": method_label(adaptation),
        "adaptation": adaptation,
        "settings": settings,
        "task": f"{data.get('source', '?')} -> {data.get('target', '?')}",
        "validation_accuracy": math.nan,
        "runs": 1,
        "folder": folder,
        "_config": config_lib.flatten(config),
    } | values


def _run_row(folder: str) -> dict:
    summary = _read_json(os.path.join(folder, "summary.json"))
    config = _read_json(os.path.join(folder, "config.json"))
    return _row(
        config,
        folder,
        train_accuracy=_float(summary.get("final_source_accuracy")),
        target_accuracy=_float(summary.get("final_target_accuracy")),
        validation_accuracy=_float(summary.get("validation_accuracy")),
    )


def _sweep_rows(folder: str) -> list[dict]:
    columns = ("adaptation", "optimizer", "learning_rate", "validation_accuracy", "run_folder")
    cells = _read_csv(os.path.join(folder, "results.csv"), columns)
    rows = []
    for adaptation in dict.fromkeys(cell["adaptation"] for cell in cells):
        own = [cell for cell in cells if cell["adaptation"] == adaptation]
        scored = [cell for cell in own if math.isfinite(_float(cell["validation_accuracy"]))]
        if not scored:
            continue
        best = max(scored, key=lambda cell: _float(cell["validation_accuracy"]))
        # Cells sit directly under the sweep folder; results.csv holds the path as typed then.
        cell_folder = os.path.join(folder, os.path.basename(best["run_folder"]))
        if not os.path.exists(os.path.join(cell_folder, "config.json")):
            raise DamagedFile(
                f"{cell_folder}/config.json is missing: {folder}/results.csv names a cell that "
                "is not in the sweep folder; rerun the sweep there or pass its cells' run folders."
            )
        row = _row(
            _read_json(os.path.join(cell_folder, "config.json")),
            cell_folder,
            train_accuracy=_float(best.get("train_accuracy")),
            target_accuracy=_float(best.get("target_accuracy")),
            validation_accuracy=_float(best["validation_accuracy"]),
        )
        row["settings"] += f" (best of {len(own)} by validation)"
        rows.append(row)
    return rows


def _pairs_rows(folder: str) -> list[dict]:
    """One row per (pair, adaptation): target and train accuracy averaged over the seeds that
    finished (``runs``); diverged seeds are left out of the mean."""
    columns = ("source", "target", "adaptation", "seed", "target_accuracy")
    runs = _read_csv(os.path.join(folder, "pairs_runs.csv"), columns)
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["source"], run["target"], run["adaptation"]), []).append(run)
    rows = []
    for (source, target, adaptation), seeds in groups.items():
        # pairs_runs.csv joins several sources with commas, the folder names with "+".
        base = os.path.join(folder, task_folder(source.split(","), target), adaptation)
        finished = [run for run in seeds if math.isfinite(_float(run["target_accuracy"]))]
        train = []
        for run in finished:
            summary_path = os.path.join(base, f"seed{run['seed']}", "summary.json")
            if os.path.exists(summary_path):
                train.append(_float(_read_json(summary_path).get("final_source_accuracy")))
        # The settings of a seed this table lists, never of a folder an earlier command left.
        configs = [os.path.join(base, f"seed{run['seed']}", "config.json") for run in seeds]
        configs = [path for path in configs if os.path.exists(path)]
        config = _read_json(configs[0]) if configs else {"adaptation": adaptation}
        config.pop("seed", None)  # the row is a mean over seeds
        config.setdefault("data", {}).update(source=source, target=target)
        rows.append(
            _row(
                config,
                base,
                train_accuracy=_mean(train),
                target_accuracy=_mean([_float(run["target_accuracy"]) for run in finished]),
                runs=len(finished),
            )
        )
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _kind(folder: str) -> str:
    """What ``folder`` is: run, sweep or pairs; anything else is a ConfigError saying what to
    do with it."""
    if os.path.exists(os.path.join(folder, "summary.json")):
        return "run"
    if os.path.exists(os.path.join(folder, "results.csv")):
        return "sweep"
    if os.path.exists(os.path.join(folder, "pairs_runs.csv")):
        return "pairs"
    if not os.path.isdir(folder):
        raise ConfigError(
            f"{folder} does not exist or is not a folder; pass a run, sweep or pairs folder."
        )
    if os.path.exists(os.path.join(folder, "config.json")):
        raise ConfigError(
            f"{folder} holds a run that has not finished (no summary.json yet); rerun its "
            "command to finish it (it resumes), then report again."
        )
    if glob.glob(os.path.join(folder, "*_to_*", "*", "seed*")):
        raise ConfigError(
            f"{folder} is a jaxdann.pairs folder whose table is not written yet (no "
            "pairs_runs.csv); rerun the same jaxdann.pairs command there to finish it, then "
            "report again."
        )
    raise ConfigError(
        f"{folder} is not a run folder (summary.json), a sweep folder (results.csv) or a pairs "
        "folder (pairs_runs.csv); finish the run there or pass another folder."
    )


def collect_rows(folders: list[str]) -> list[dict]:
    """One row per run folder, the best-by-validation cells of each sweep folder, one row per
    pair and adaptation of each pairs folder; rows alike are told apart by their settings."""
    readers = {"run": lambda folder: [_run_row(folder)], "sweep": _sweep_rows, "pairs": _pairs_rows}
    rows = []
    for folder in folders:
        rows.extend(readers[_kind(folder)](folder))
    _tell_apart(rows)
    return rows


def _tell_apart(rows: list[dict]) -> None:
    """Adds to ``settings`` the config keys in which rows of the same label differ."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["settings"], row["task"]), []).append(row)
    for group in groups.values():
        if len(group) < 2:
            continue
        keys = sorted(
            key
            for key in set().union(*(row["_config"] for row in group))
            if len({repr(row["_config"].get(key)) for row in group}) > 1
        )
        if not keys:
            continue  # the same settings in several folders: the folder column tells them apart
        shown = keys[:_MAX_DIFFERENCES]
        for row in group:
            differences = ", ".join(f"{key}={row['_config'].get(key)}" for key in shown)
            if len(keys) > len(shown):
                differences += f", +{len(keys) - len(shown)} more"
            row["settings"] += f"; {differences}"


def _number(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_markdown(rows: list[dict]) -> str:
    lines = [
        "| method | settings | source -> target | train accuracy | target accuracy "
        "| validation accuracy | runs | folder |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (row["train_accuracy"], row["target_accuracy"], row["validation_accuracy"])
        numbers = " | ".join(_number(v) for v in cells)
        lines.append(
            f"| {row['method']} | {row['settings']} | {row['task']} | {numbers} "
            f"| {row['runs']} | {row['folder']} |"
        )
    return "\n".join(lines) + "\n"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows each flag's default."""


def _write(output: str, markdown: str, rows: list[dict]) -> None:
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(output, "report.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.report", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument("folders", nargs="+", help="run, sweep and/or pairs folders")
    parser.add_argument(
        "--output",
        default=".",
        help="where report.md and report.csv go (default: %(default)r, the current directory)",
    )
    args = parser.parse_args(argv)
    try:
        rows = collect_rows(args.folders)
        markdown = format_markdown(rows)
        _write(args.output, markdown, rows)
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    print(markdown, end="")
    print(f"wrote report.md and report.csv in {os.path.abspath(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A results table like the seed's conclusion, from run and sweep folders' files alone.

    python -m jaxdann.report runs/source_only runs/dann runs/grid [--output report]

A run folder (it has ``summary.json``) gives one row; a sweep folder (``results.csv``) gives its
best cell by validation accuracy for each adaptation. Writes ``report.md`` and ``report.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

from jaxdann.run_folder import read_json

__all__ = ["collect_rows", "format_markdown", "main"]

_RERUN = "restore it, or delete it and rerun that run's command, which writes it anew"

COLUMNS = ("model", "task", "train_accuracy", "test_accuracy", "validation_accuracy", "folder")


def _model_name(adaptation: str, learning_rate: float, optimizer: str) -> str:
    prefix = "ADAP" if adaptation == "dann" else "NO ADAP"
    return f"{prefix} {learning_rate:g} {optimizer.upper()}"


def _task(config: dict) -> str:
    data = config.get("data", {})
    return f"{data.get('source', '?')} -> {data.get('target', '?')}"


def _run_row(folder: str) -> dict:
    summary = read_json(os.path.join(folder, "summary.json"), fix=_RERUN)
    config = read_json(os.path.join(folder, "config.json"), fix=_RERUN)
    optimizer = config["optimizer"]
    return {
        "model": _model_name(config["adaptation"], optimizer["learning_rate"], optimizer["name"]),
        "task": _task(config),
        "train_accuracy": summary["final_source_accuracy"],
        "test_accuracy": summary["final_target_accuracy"],
        "validation_accuracy": summary.get("validation_accuracy"),
        "folder": folder,
    }


def _sweep_rows(folder: str) -> list[dict]:
    with open(os.path.join(folder, "results.csv"), newline="") as f:
        cells = list(csv.DictReader(f))
    rows = []
    for adaptation in dict.fromkeys(cell["adaptation"] for cell in cells):
        scored = [
            cell
            for cell in cells
            if cell["adaptation"] == adaptation
            and math.isfinite(float(cell["validation_accuracy"]))
        ]
        if not scored:
            continue
        best = max(scored, key=lambda cell: float(cell["validation_accuracy"]))
        # Cells sit directly under the sweep folder; results.csv holds the path as typed then.
        cell_config = os.path.join(folder, os.path.basename(best["run_folder"]), "config.json")
        if not os.path.exists(cell_config):
            raise FileNotFoundError(
                f"{cell_config} is missing: {folder}/results.csv names a cell that is not in "
                "the sweep folder; rerun the sweep there or pass its cells' run folders."
            )
        task = _task(read_json(cell_config, fix=_RERUN))
        rows.append(
            {
                "model": _model_name(adaptation, float(best["learning_rate"]), best["optimizer"]),
                "task": task,
                "train_accuracy": float(best["train_accuracy"]),
                "test_accuracy": float(best["target_accuracy"]),
                "validation_accuracy": float(best["validation_accuracy"]),
                "folder": best["run_folder"],
            }
        )
    return rows


def collect_rows(folders: list[str]) -> list[dict]:
    """One row per run folder, the best-by-validation cells of each sweep folder."""
    rows = []
    for folder in folders:
        if os.path.exists(os.path.join(folder, "summary.json")):
            rows.append(_run_row(folder))
        elif os.path.exists(os.path.join(folder, "results.csv")):
            rows.extend(_sweep_rows(folder))
        else:
            raise FileNotFoundError(
                f"{folder} has neither summary.json (a finished run) nor results.csv (a sweep); "
                "finish the run or pass another folder."
            )
    return rows


def _number(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_markdown(rows: list[dict]) -> str:
    lines = [
        "| model | source -> target | train accuracy | test accuracy | validation accuracy |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (row["train_accuracy"], row["test_accuracy"], row["validation_accuracy"])
        numbers = " | ".join(_number(v) for v in cells)
        lines.append(f"| {row['model']} | {row['task']} | {numbers} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxdann.report", description=__doc__)
    parser.add_argument("folders", nargs="+", help="run folders and/or sweep folders")
    parser.add_argument("--output", default=".", help="where report.md and report.csv go")
    args = parser.parse_args(argv)
    try:
        rows = collect_rows(args.folders)
        markdown = format_markdown(rows)
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "report.md"), "w") as f:
            f.write(markdown)
        with open(os.path.join(args.output, "report.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

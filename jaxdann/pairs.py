"""Source-only and DANN on every ordered pair of PACS domains, over several seeds.

    python -m jaxdann.pairs --config configs/pacs_dann.py --workdir runs/pairs --seeds 0,1,2 \\
        [--domains photo,art_painting,cartoon,sketch] [--config.KEY=VALUE ...]

Reports mean +- sample std of the final target accuracy per pair and the average over pairs, as
published domain-adaptation tables do; adversarial training is unstable, so the spread matters
as much as the mean. Each run is an ordinary, resumable run folder
(``WORKDIR/<source>_to_<target>/<adaptation>/seed<N>``); rerunning skips finished ones.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

from jaxdann import config as config_lib
from jaxdann import feed as feeds
from jaxdann import input_pipeline
from jaxdann.data import DOMAINS
from jaxdann.sweep import enable_compilation_cache, join_processes, run_cell

__all__ = ["run_pairs", "summarize_pairs", "main"]

ADAPTATIONS = ("none", "dann")


def run_pairs(config, workdir: str, seeds: Sequence[int], domains: Sequence[str] = DOMAINS):
    """Trains every (source, target, adaptation, seed); returns the per-run rows."""
    if config.data.name != "pacs":
        raise config_lib.ConfigError(
            "jaxdann.pairs runs PACS domain pairs; use a PACS config such as configs/pacs_dann.py."
        )
    reports = join_processes(config, "jaxdann.pairs")
    os.makedirs(workdir, exist_ok=True)
    enable_compilation_cache(os.path.join(workdir, ".jax_cache"))
    loaded = feeds.load_everywhere(lambda: input_pipeline.load_pacs_domains(config, list(domains)))
    rows = []
    for source in domains:
        for target in domains:
            if source == target:
                continue
            for adaptation in ADAPTATIONS:
                for seed in seeds:
                    run = copy.deepcopy(config)
                    run.data.source, run.data.target = source, target
                    run.data.validation = ""  # the table reports target accuracy only
                    run.adaptation, run.seed = adaptation, int(seed)
                    folder = os.path.join(
                        workdir, f"{source}_to_{target}", adaptation, f"seed{seed}"
                    )
                    if reports:
                        print(f"{source} -> {target} {adaptation} seed {seed}")
                    data = input_pipeline.load_experiment_data(run, domains=loaded)
                    summary, status = run_cell(run, folder, data)
                    accuracy = summary["final_target_accuracy"] if summary else math.nan
                    rows.append(
                        {
                            "source": source,
                            "target": target,
                            "adaptation": adaptation,
                            "seed": int(seed),
                            "target_accuracy": accuracy,
                            "status": status,
                            "run_folder": folder,
                        }
                    )
    if not reports:
        return rows
    with open(os.path.join(workdir, "pairs_runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarize_pairs(rows)
    with open(os.path.join(workdir, "pairs.md"), "w") as f:
        f.write(table)
    print(table, end="")
    return rows


def _mean_std(values: list[float]) -> str:
    """Mean +- sample std of the finite values, saying how many runs diverged (NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "diverged"
    if len(finite) == 1:  # no spread to report
        text = f"{finite[0]:.4f}"
    else:
        text = f"{np.mean(finite):.4f} +- {float(np.std(finite, ddof=1)):.4f}"
    if len(finite) < len(values):
        text += f" ({len(finite)} of {len(values)}; {len(values) - len(finite)} diverged)"
    return text


def summarize_pairs(rows: list[dict]) -> str:
    """Markdown: one line per pair (mean +- std over seeds), then the average over pairs."""
    pairs = list(dict.fromkeys((row["source"], row["target"]) for row in rows))
    lines = [
        "| source -> target | source only | DANN | seeds |",
        "|---|---|---|---|",
    ]
    per_seed_average = {adaptation: {} for adaptation in ADAPTATIONS}
    for source, target in pairs:
        cells = []
        for adaptation in ADAPTATIONS:
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
        seeds = len({row["seed"] for row in rows})
        lines.append(f"| {source} -> {target} | {cells[0]} | {cells[1]} | {seeds} |")
    # The average over pairs, computed per seed, then mean +- std over seeds.
    averages = [
        _mean_std([float(np.mean(v)) for v in per_seed_average[adaptation].values()])
        for adaptation in ADAPTATIONS
    ]
    lines.append(f"| **average** | {averages[0]} | {averages[1]} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        config, _, given = config_lib.config_from_command_line(
            argv, "jaxdann.pairs", ("workdir", "seeds", "domains"), required=("workdir",)
        )
        try:
            seeds = [int(s) for s in given.get("seeds", "0,1,2").split(",") if s]
        except ValueError:
            raise config_lib.ConfigError(
                f"--seeds={given['seeds']}: expected integers like 0,1,2"
            ) from None
        domains = [d for d in given.get("domains", ",".join(DOMAINS)).split(",") if d]
        if len(set(domains)) < 2 or len(set(domains)) != len(domains):
            raise config_lib.ConfigError(
                f"--domains={given.get('domains')}: name at least two different domains, "
                f"each once (from {', '.join(DOMAINS)})"
            )
        if not seeds or len(set(seeds)) != len(seeds):
            raise config_lib.ConfigError(f"--seeds={given.get('seeds')}: name each seed once")
        run_pairs(config, given["workdir"], seeds, domains)
    except (ValueError, OSError) as error:  # ConfigError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return config_lib.exit_code(error)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; rerun the same command: finished runs are skipped, the "
            "interrupted one resumes from its last checkpoint (or restarts, if it saved none)",
            file=sys.stderr,
        )
        return config_lib.INTERRUPTED
    return 0


if __name__ == "__main__":
    config_lib.exit_process(main())

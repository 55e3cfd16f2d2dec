"""``python -m jaxdann.train [--config configs/NAME.py] [--workdir DIR] [--config.KEY=VALUE ...]``

Without ``--config`` it trains the embedded demo (digits -> textured digits); without
``--workdir`` it makes a fresh folder under ``runs/``. Rerunning with the same ``--workdir``
resumes from the last checkpoint.

Exit status (``config.exit_code``): 0 done; 1 the run failed (unreadable data or run-folder
files, divergence); 2 the settings were refused (a bad flag or value, settings that do not fit the
data, or settings or data other than those of the run in ``--workdir``); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time

from jaxdann import config as config_lib

__all__ = ["main", "default_workdir"]


def default_workdir(config, config_path: str | None) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0] if config_path else "demo"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{config.adaptation}-{stamp}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        print("config keys:", ", ".join(sorted(config_lib.flatten(config_lib.base_config()))))
        return 0
    try:
        config, path, flags = config_lib.config_from_command_line(
            argv, "python -m jaxdann.train", extra_flags=("workdir",)
        )
    except config_lib.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    workdir = flags.get("workdir") or default_workdir(config, path)
    print(f"run folder: {workdir}")

    try:
        from jaxdann.trainer import TrainingDiverged, train_and_evaluate
    except KeyboardInterrupt:  # while jax loads: nothing has started
        print("\ninterrupted before training started", file=sys.stderr)
        return config_lib.INTERRUPTED
    try:
        summary = train_and_evaluate(config, workdir)
    except (TrainingDiverged, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return config_lib.exit_code(error)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; rerun with --workdir {workdir} (and the same settings) to resume "
            "from its last checkpoint (config key checkpoint_every_epochs sets how often one is "
            "saved; with none it restarts)",
            file=sys.stderr,
        )
        return config_lib.INTERRUPTED
    import jax  # after train_and_evaluate: it may have started the distributed runtime

    if jax.process_index() != 0:
        return 0
    print(
        f"done: target accuracy {summary['final_target_accuracy']:.4f} "
        f"(best {summary['best_target_accuracy']:.4f} at epoch {summary['best_target_epoch']}), "
        f"source accuracy {summary['final_source_accuracy']:.4f}; results in {workdir}"
    )
    return 0


if __name__ == "__main__":
    config_lib.exit_process(main())

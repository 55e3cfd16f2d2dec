"""``python -m jaxdann.train [--config configs/NAME.py] [--workdir DIR] [--config.KEY=VALUE ...]``

Without --config it trains the embedded demo (digits -> textured digits); without --workdir it
makes a fresh folder under runs/. Rerunning with the same --workdir resumes from the last
checkpoint; a larger --config.epochs extends a finished run. One run at a time per folder.

Exit status: 0 done; 1 the run failed (unreadable data or run-folder files, divergence); 2 the
settings were refused (a bad flag or value, settings that do not fit the data or the run in
--workdir, a folder in use); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time

from jaxdann import config as config_lib
from jaxdann.errors import INTERRUPTED, exit_code, is_user_error

__all__ = ["main", "default_workdir"]


def default_workdir(config, config_path: str | None) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0] if config_path else "demo"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{config.adaptation}-{stamp}")


def _print_help() -> None:
    print(__doc__.strip().replace("``", ""))
    print("\nconfig keys (--config.KEY=VALUE), with the seed study's defaults:")
    print(config_lib.describe_keys())


def _interrupted(workdir: str) -> str:
    from jaxdann.training.run_folder import saved_epochs

    if os.path.isdir(workdir) and saved_epochs(workdir):
        return (
            f"\ninterrupted; rerun with --workdir {workdir} (and the same settings) to resume "
            "from its last checkpoint"
        )
    return (
        f"\ninterrupted before any checkpoint was saved; rerunning with --workdir {workdir} "
        "starts it again (config key checkpoint_every_epochs sets how often one is saved)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        return config_lib.print_or_quiet(_print_help)
    workdir = None
    try:
        config, path, flags = config_lib.config_from_command_line(
            argv, "python -m jaxdann.train", extra_flags=("workdir",)
        )
        workdir = flags.get("workdir") or default_workdir(config, path)
        from jaxdann.training.trainer import train_and_evaluate

        summary = train_and_evaluate(config, workdir)
    except KeyboardInterrupt:
        message = _interrupted(workdir) if workdir else "\ninterrupted before training started"
        print(message, file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
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

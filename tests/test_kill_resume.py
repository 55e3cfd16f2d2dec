"""`python -m jaxdann.train` killed with SIGKILL at random moments and rerun: the unbroken result.

The README's claim (a run stopped at any moment and resumed ends with exactly the metrics of an
unbroken run), checked end to end with real processes and `kill -9`, which no `finally` block or
signal handler sees: whatever a killed run leaves on disk is what the next run starts from.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from test_train import read_rows, tiny_config

from jaxdann import config as config_lib
from jaxdann.training.trainer import train_and_evaluate

EPOCHS = 8
# 13 steps an epoch (200 images, batch 16): about 0.4 s an epoch with its checkpoint on 2 CPU
# cores, so a kill a fraction of a second after an event lands in a step, a save or between.
CONFIG = tiny_config(epochs=EPOCHS, checkpoint_every_epochs=1, log_every_epoch=True)
CONFIG = config_lib.apply_overrides(CONFIG, {"data.limit": "200"})
SEED = 0  # of the kill delays
TIMEOUT_S = 180  # per command: a hung run fails the test instead of the suite
MARKER = "_CHECKPOINT_METADATA"  # in a whole orbax checkpoint (run_folder.py)


def command_line(config, workdir):
    """`python -m jaxdann.train` with the overrides that turn the demo into ``config``."""
    demo = config_lib.flatten(config_lib.to_dict(config_lib.demo_config()))
    flat = config_lib.flatten(config_lib.to_dict(config))
    overrides = [f"--config.{key}={value}" for key, value in flat.items() if value != demo[key]]
    return [sys.executable, "-m", "jaxdann.train", "--workdir", str(workdir), *overrides]


def start(config, workdir, log, cache_dir, write_cache):
    """The run, with a compilation cache: the unbroken run writes it, the others only read it
    (so no kill cuts a cache file short), and start in about 3 s instead of 7 s."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0" if write_cache else "1e9"
    return subprocess.Popen(
        command_line(config, workdir), stdout=log, stderr=subprocess.STDOUT, text=True, env=env
    )


def row_count(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:  # replaced whole by the run: never half a file
        return sum(1 for line in f if line.strip())


def checkpoint_entries(workdir):
    folder = os.path.join(workdir, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def saves_begun(workdir):
    """Orbax writes step N into a temporary folder, renamed to N when the save is whole."""
    return {name for name in checkpoint_entries(workdir) if "tmp" in name}


def read_json(workdir, name):
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def without_timing(rows):
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="signals are tested on Linux")
def test_runs_killed_at_random_moments_resume_to_the_unbroken_result(tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    cache, logs = tmp_path / "jax_cache", []

    def run_to_the_end(workdir):
        logs.append(tmp_path / f"run{len(logs)}.log")
        with open(logs[-1], "w") as log:
            process = start(CONFIG, workdir, log, cache, write_cache=workdir == unbroken)
            try:
                process.wait(timeout=TIMEOUT_S)
            finally:
                process.kill()
        return process.returncode

    def log_tails():
        return "\n".join(f"--- {path.name}:\n{path.read_text()[-1500:]}" for path in logs)

    assert run_to_the_end(unbroken) == 0, log_tails()
    expected_rows = read_rows(unbroken)
    assert [row["epoch"] for row in expected_rows] == list(range(1, EPOCHS + 1))

    # Each kill waits for something the run does (so every run gets somewhere), then a random
    # delay: into compilation or the first epochs, into a checkpoint save, into an epoch or
    # between two, and into the end (the last save, the evaluation, the figures, the summary).
    # A run that ends before its kill is fine: the next one resumes from where it ended.
    rng = random.Random(SEED)
    kills = [
        ("config.json written", lambda w, s: os.path.exists(w / "config.json"), 1.5),
        ("a checkpoint save began", lambda w, s: saves_begun(w) - s["saves"], 0.15),
        ("a metrics row written", lambda w, s: row_count(w) > s["rows"], 0.6),
        ("the last metrics row written", lambda w, s: row_count(w) == EPOCHS, 1.0),
    ]
    plan = [(event, ready, round(rng.uniform(0, most), 3)) for event, ready, most in kills]
    report = []  # what each kill met, for the failure messages

    def story():
        return "\n".join(report) + "\n" + log_tails()

    print(f"kill delays (seed {SEED}): {[(event, delay) for event, _, delay in plan]}")

    for event, ready, delay in plan:
        before = {"rows": row_count(broken), "saves": saves_begun(broken)}
        logs.append(tmp_path / f"run{len(logs)}.log")
        with open(logs[-1], "w") as log:
            process = start(CONFIG, broken, log, cache, write_cache=False)
            try:
                deadline = time.monotonic() + TIMEOUT_S
                while not ready(broken, before) and process.poll() is None:
                    assert time.monotonic() < deadline, f"waited for {event}\n{story()}"
                    time.sleep(0.002)
                time.sleep(delay)
                seen = (row_count(broken), checkpoint_entries(broken))
                process.send_signal(signal.SIGKILL)  # nothing if it already ended
                process.wait(timeout=TIMEOUT_S)
            finally:
                process.kill()
        ended = "killed" if process.returncode == -signal.SIGKILL else "ended by itself"
        report.append(
            f"kill {delay:.3f} s after {event}: {ended} (rc {process.returncode}), at that "
            f"moment {seen[0]} metrics rows, checkpoints/ {seen[1]}"
        )
        assert process.returncode in (0, -signal.SIGKILL), story()
    print("\n".join(report))  # shown with the failure of any check below
    # A run may end before its kill, but if none was killed this test proved nothing.
    assert any(" killed " in line for line in report), story()

    assert run_to_the_end(broken) == 0, story()
    rows = read_rows(broken)
    # Every number of every epoch, bit for bit (as the in-process resume tests compare them).
    assert without_timing(rows) == without_timing(expected_rows), story()
    summary = read_json(broken, "summary.json")
    expected_summary = read_json(unbroken, "summary.json")
    for key in ("final_target_accuracy", "best_target_accuracy", "best_target_epoch", "epochs"):
        assert summary[key] == expected_summary[key], f"{key}\n{story()}"
    assert summary["validation_accuracy"] == expected_summary["validation_accuracy"], story()
    assert read_json(broken, "evaluation.json") == read_json(unbroken, "evaluation.json"), story()
    assert read_json(broken, "config.json") == config_lib.to_dict(CONFIG)
    # The two newest checkpoints, as in the unbroken run. Whole ones only: a step whose deletion
    # a kill cut short stays, without orbax's marker, until a later save (run_folder.py).
    entries = checkpoint_entries(broken)
    saved = [n for n in entries if n.isdigit() and (broken / "checkpoints" / n / MARKER).exists()]
    assert saved == [str(EPOCHS - 1), str(EPOCHS)], f"{entries}\n{story()}"

    # The folder is a finished run: rerunning it is accepted and trains nothing.
    def no_training(step):
        raise AssertionError(f"step {step} ran again\n{story()}")

    again = train_and_evaluate(CONFIG, str(broken), progress=False, on_step=no_training)
    assert again["final_target_accuracy"] == expected_summary["final_target_accuracy"]
    assert read_rows(broken) == rows
    # Evaluated again from the last checkpoint: the unbroken run's final weights.
    assert read_json(broken, "evaluation.json") == read_json(unbroken, "evaluation.json")

"""A run folder: its files, and whether a run may (re)start in it.

Files are replaced whole (a temporary file, then a rename): a run stopped at any moment leaves
the old version or the new one, never half of one. A file that does not parse is an error that
names it and what to do. :func:`check_workdir` refuses a folder holding another run, or a damaged
one, before anything in it changes.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from jaxdann import config as config_lib
from jaxdann.input_pipeline import FINGERPRINT_SPLITS

__all__ = [
    "DamagedFile",
    "DATA_RECORD",
    "RESUMABLE_KEYS",
    "check_data",
    "check_workdir",
    "read_json",
    "read_metrics",
    "saved_epochs",
    "write_data",
    "write_json",
    "write_metrics",
    "write_text",
]


# The file orbax writes into a finished step's folder, and what it writes at the top of one
# (orbax-checkpoint 0.12, one item "default").
_MARKER = "_CHECKPOINT_METADATA"
_ORBAX_ENTRIES = frozenset({_MARKER, "commit_success.txt", "default"})
DATA_RECORD = "data.json"  # what the run reads (input_pipeline.ExperimentData.fingerprint)


class DamagedFile(ValueError):
    """A run-folder file that cannot be read; the message names it and what to do."""


def read_json(path: str, fix: str = "restore it or choose a new --workdir") -> Any:
    """``path``'s JSON; OSError if it is missing, :class:`DamagedFile` if it does not parse."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise DamagedFile(f"{path} is not valid JSON ({error}); {fix}.") from None


def write_text(path: str, text: str) -> None:
    """Writes ``path`` whole, through a temporary file: never a half-written file."""
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True))


def read_metrics(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl``."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DamagedFile(
                    f"{path}, line {number}: not valid JSON ({error.msg}); restore the file, or "
                    f"delete line {number} and those after it to resume from an earlier "
                    "checkpoint (or from the start), or choose a new --workdir."
                ) from None
    return rows


def write_metrics(path: str, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def saved_epochs(workdir: str) -> list[int]:
    """The epochs after which ``workdir/checkpoints`` holds a finished orbax checkpoint."""
    checkpoints = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(checkpoints):
        return []
    return sorted(
        int(name)
        for name in os.listdir(checkpoints)
        if name.isdigit() and os.path.exists(os.path.join(checkpoints, name, _MARKER))
    )


# Keys a resumed run may change: the run length, how it computes (the same function, rounded
# differently) and what it prints or caches. Everything else must match the folder's run.
RESUMABLE_KEYS = frozenset(
    {
        "epochs",
        "checkpoint_every_epochs",
        "eval_batch_size",
        "model.stem",
        "model.pool_gradient",
        "parallel.num_devices",
        "log_every_epoch",
        "eval.validation_every_epoch",
        "data.cache_dir",
    }
)
# Where and how the data is read: these may change once the folder records what its run read
# (data.json), since the resumed run must then read the same (check_data).
_READ_KEYS = frozenset({"data.root", "data.format", "data.on_bad"})


def check_workdir(config, workdir: str) -> None:
    """Refuses a run folder whose earlier run used other settings or ran more epochs than asked.

    Resuming and extending (a larger ``epochs``) are allowed, as is changing a key of
    :data:`RESUMABLE_KEYS` (how the run computes or reports, not what it trains); anything else
    would mix two runs in one folder or overwrite finished results.
    """
    if not os.path.isdir(workdir):
        return
    _check_checkpoint_folders(os.path.join(workdir, "checkpoints"))
    rows, saved = _progress(workdir)
    trained = max([len(rows), *saved])
    if not trained:
        return
    path = os.path.join(workdir, "config.json")
    metrics = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise DamagedFile(
            f"{workdir} holds a trained run (metrics.jsonl or checkpoints) but no config.json, so "
            "its settings cannot be checked; restore config.json or choose a new --workdir."
        )
    previous = config_lib.flatten(read_json(path))
    current = config_lib.flatten(config_lib.to_dict(config))
    resumable = RESUMABLE_KEYS
    if os.path.exists(os.path.join(workdir, DATA_RECORD)):
        resumable |= _READ_KEYS
    # Keys added to jaxdann after the run started are not compared: it never had them.
    differing = sorted(
        key for key in previous if key not in resumable and previous[key] != current.get(key)
    )
    if differing:
        changes = "; ".join(
            f"{key}: {previous[key]!r}, now {current.get(key)!r}" for key in differing
        )
        raise config_lib.ConfigError(
            f"{workdir} holds a run with a different config ({changes}); resume with the same "
            "settings (epochs may grow) or choose a new --workdir."
        )
    if trained > int(config.epochs):
        raise config_lib.ConfigError(
            f"{workdir} holds a run that trained {trained} epochs, more than epochs="
            f"{config.epochs}; ask for at least {trained} or choose a new --workdir."
        )
    if saved:  # the run resumes from the newest checkpoint, after the rows before it
        missing = sorted(set(range(1, saved[-1] + 1)) - {row.get("epoch") for row in rows})
        if missing:
            raise DamagedFile(
                f"{metrics} lacks epoch(s) {_spans(missing)}, which the checkpoint after epoch "
                f"{saved[-1]} follows; put the file back if you have it, move checkpoints/"
                f"{saved[-1]} out of {workdir}/checkpoints to resume from an earlier checkpoint, "
                "or choose a new --workdir."
            )


def check_data(workdir: str, fingerprints: list[dict]) -> None:
    """Refuses to resume a run on other data than it trained on (``fingerprints``: from
    ``jaxdann.feed.data_fingerprints``), wherever that data is read from now."""
    path = os.path.join(workdir, DATA_RECORD)
    if not os.path.exists(path) or not any(_progress(workdir)):
        return
    record = read_json(path)
    recorded = record.get("processes") if isinstance(record, dict) else None
    if not (isinstance(recorded, list) and recorded and all(map(_is_entry, recorded))):
        raise DamagedFile(
            f"{path} is not a data record jaxdann wrote; restore it or choose a new --workdir."
        )
    if len(recorded) != len(fingerprints):  # shards on another number of processes
        raise config_lib.ConfigError(
            f"{workdir} recorded the data of {len(recorded)} process(es), this run has "
            f"{len(fingerprints)}; resume it as it started or choose a new --workdir."
        )
    for then, now in zip(recorded, fingerprints, strict=True):
        for split in then:
            if then[split] != now[split]:
                raise config_lib.ConfigError(
                    f"{workdir} was trained on other data than it reads now ({split}: "
                    f"{_describe(then[split])} then, {_describe(now[split])} now); read the "
                    "data the run started with (data.root, data.format) or choose a new --workdir."
                )


def write_data(workdir: str, fingerprints: list[dict]) -> None:
    """Records what the run reads (see :func:`check_data`)."""
    write_json(os.path.join(workdir, DATA_RECORD), {"processes": fingerprints})


def _progress(workdir: str) -> tuple[list[dict], list[int]]:
    """The metrics rows and the saved checkpoints' epochs in ``workdir``: what it trained."""
    metrics = os.path.join(workdir, "metrics.jsonl")
    return (read_metrics(metrics) if os.path.exists(metrics) else []), saved_epochs(workdir)


def _is_entry(entry) -> bool:
    """One process's entry as :func:`write_data` writes it: every split, each absent or whole."""
    return (
        isinstance(entry, dict)
        and set(entry) == set(FINGERPRINT_SPLITS)
        and all(split is None or _is_split(split) for split in entry.values())
    )


def _is_split(split) -> bool:
    return (
        isinstance(split, dict)
        and set(split) == {"images", "crc32"}
        and isinstance(split["images"], int)
        and re.fullmatch("[0-9a-f]{8}", str(split["crc32"])) is not None
    )


def _describe(split: dict | None) -> str:
    return "none" if split is None else f"{split['images']} images, CRC-32 {split['crc32']}"


def _check_checkpoint_folders(checkpoint_dir: str) -> None:
    """Refuses numbered entries in ``checkpoints/`` that orbax did not write.

    Orbax takes every numbered folder for a step: the newest fails the restore, and an older one
    is deleted by its keep-two clean-up, with whatever the user put there. A folder with orbax's
    marker is a checkpoint; one without it that holds only orbax's own entries is a step orbax
    was deleting when the run was killed, and is left to orbax.
    """
    if not os.path.isdir(checkpoint_dir):
        return
    for name in sorted(os.listdir(checkpoint_dir)):
        path = os.path.join(checkpoint_dir, name)
        if not name.isdigit() or os.path.exists(os.path.join(path, _MARKER)):
            continue
        foreign = sorted(set(os.listdir(path)) - _ORBAX_ENTRIES) if os.path.isdir(path) else []
        if not os.path.isdir(path) or foreign:
            holds = f" (it holds {', '.join(foreign)})" if foreign else ""
            raise DamagedFile(
                f"{path} is not a checkpoint jaxdann wrote{holds}; move it out of "
                f"{checkpoint_dir} and rerun."
            )


def _spans(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    spans, start = [], None
    for index, number in enumerate(numbers):
        start = number if start is None else start
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            spans.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(spans)

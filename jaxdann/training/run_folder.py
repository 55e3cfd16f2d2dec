"""A run folder: its files, and whether a run may (re)start in it.

Files are replaced whole (a temporary file, then a rename): a run stopped at any moment leaves
the old version or the new one, never half of one. A file that does not parse is an error that
names it and what to do. :func:`check_workdir` refuses a folder holding another run, or a damaged
one, before anything in it changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from jaxdann import config as config_lib
from jaxdann.data.pipeline import FINGERPRINT_SPLITS
from jaxdann.errors import DamagedFile, FolderInUse

__all__ = [
    "DamagedFile",
    "DATA_RECORD",
    "MODEL_RECORD",
    "RESUMABLE_KEYS",
    "RunFolder",
    "check_data",
    "check_workdir",
    "held",
    "hold_folder",
    "model_record",
    "read_json",
    "read_metrics",
    "saved_epochs",
    "write_data",
    "write_json",
    "write_metrics",
    "write_text",
]


# The file orbax writes into a finished step's folder, and what it writes at the top of one
# (orbax-checkpoint 0.12: the train state is the item "default"; a streamed run's checkpoints
# also hold the item DATA_ITERATOR, its data pipeline's state).
_MARKER = "_CHECKPOINT_METADATA"
DATA_ITERATOR = "data_iterator"
_ORBAX_ENTRIES = frozenset({_MARKER, "commit_success.txt", "default", DATA_ITERATOR})
DATA_RECORD = "data.json"  # what the run reads (input_pipeline.ExperimentData.fingerprint)
# What using the trained model needs besides config.json and a checkpoint (jaxdann.inference).
MODEL_RECORD = "model.json"


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
        "data.workers",  # a streamed run's checkpoint says how many it resumes with
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
    if "data.name" in previous:  # the demo's folders from before it was named "demo"
        from jaxdann.data.demo import current_dataset_name

        previous["data.name"] = current_dataset_name(
            previous["data.name"], previous.get("data.source", "")
        )
    current = config_lib.flatten(config_lib.to_dict(config))
    resumable = RESUMABLE_KEYS
    if os.path.exists(os.path.join(workdir, DATA_RECORD)):
        resumable |= _READ_KEYS
    # A key the folder's config lacks (made by a jaxdann without it) had its default value.
    defaults = config_lib.flatten(config_lib.base_config())
    previous |= {key: defaults[key] for key in current if key not in previous and key in defaults}
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
    ``jaxdann.training.feed.data_fingerprints``), wherever that data is read from now."""
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


def model_record(data) -> dict:
    """``data``'s class names in label order and the normalisation its images get: with these
    a trained model classifies new images without the data set it was trained on."""
    return {
        "class_names": [str(name) for name in data.class_names],
        "mean": [float(value) for value in data.mean],
        "std": [float(value) for value in data.std],
    }


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
    if split is None:
        return "none"
    count = split["images"]
    return f"{count} image{'' if count == 1 else 's'}, CRC-32 {split['crc32']}"


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


class RunFolder:
    """The protocol of a run in its folder, in the order a run follows it.

    ``hold`` (one run per folder), ``check_settings`` and ``check_data`` (may this run start
    or resume here), ``restore`` (the newest checkpoint), ``write_record`` (config.json,
    data.json: only once the run can start, so a refused run leaves the folder as it was),
    ``commit_epoch`` (the metrics row, then maybe a checkpoint: a checkpoint never stands
    without its row),
    ``finish`` (evaluation.json, then summary.json, which marks a finished run) and ``close``
    (waits for in-flight saves). Only process 0 writes files; every process saves checkpoints.
    """

    def __init__(self, workdir: str, config, *, is_main: bool = True):
        self.workdir, self.config, self.is_main = workdir, config, is_main
        self.checkpoint_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self._lock = None
        self._manager = None

    def hold(self) -> None:
        """Holds the folder for this process (see :func:`hold_folder`)."""
        if self.is_main:
            self._lock = hold_folder(self.workdir)

    def check_settings(self) -> None:
        """May this config start or resume here (before any data is read)?"""
        check_workdir(self.config, self.workdir)

    def check_data(self, fingerprints: list[dict]) -> None:
        """Does the data read now match what the folder's run trained on?"""
        check_data(self.workdir, fingerprints)

    @property
    def streaming(self) -> bool:
        return bool(self.config.data.streaming)

    @property
    def manager(self):
        if self._manager is None:
            import orbax.checkpoint as ocp

            # A streamed run saves two items: the state and its data pipeline's position.
            items = ("default", DATA_ITERATOR) if self.streaming else None
            self._manager = ocp.CheckpointManager(
                self.checkpoint_dir,
                item_names=items,
                # cleanup_tmp_directories: a save cut short by a kill leaves a temporary folder.
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=2, create=True, cleanup_tmp_directories=True
                ),
            )
        return self._manager

    def restore(self, state):
        """``(state, start_epoch, history)``: the newest checkpoint and the rows up to it."""
        import jax
        import orbax.checkpoint as ocp

        start_epoch = self.manager.latest_step() or 0
        history = []
        if os.path.exists(self.metrics_path):
            history = [r for r in read_metrics(self.metrics_path) if r["epoch"] <= start_epoch]
        if not start_epoch:
            return state, 0, history
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            state = self._restore(start_epoch, state, abstract)
        except Exception as error:  # orbax and TensorStore raise many kinds
            folder = os.path.join(self.checkpoint_dir, str(start_epoch))
            raise DamagedFile(
                f"the checkpoint {folder} cannot be read ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200] if str(error) else ''}); move that folder out "
                f"of {self.checkpoint_dir} to resume from the checkpoint before it, or choose a "
                "new --workdir."
            ) from error
        if self.is_main:
            print(f"resuming {self.workdir} from the checkpoint after epoch {start_epoch}")
        return state, start_epoch, history

    def _restore(self, epoch: int, state, abstract):
        """The checkpoint after ``epoch`` as a state like ``state``. A checkpoint saved without
        a ``model_state`` (jaxdann 0.1's format) restores into a state whose ``model_state`` is
        empty, the only kind such a run had."""
        import orbax.checkpoint as ocp

        if self.streaming:
            args = ocp.args.Composite(default=ocp.args.StandardRestore(abstract))
            return self.manager.restore(epoch, args=args)["default"]
        try:
            return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except ValueError:
            if state.model_state:
                raise
        fields = ("step", "params", "opt_state", "learning_rate")
        old = {name: getattr(abstract, name) for name in fields}
        restored = self.manager.restore(epoch, args=ocp.args.StandardRestore(old))
        return state.replace(**restored)

    def write_record(
        self, config_dict: dict, fingerprints: list[dict], retrain: bool, data=None
    ) -> None:
        """config.json, data.json and, given the run's ``data``, model.json
        (:func:`model_record`)."""
        os.makedirs(self.workdir, exist_ok=True)
        if not self.is_main:
            return
        write_json(os.path.join(self.workdir, "config.json"), config_dict)
        write_data(self.workdir, fingerprints)
        if data is not None:
            write_json(os.path.join(self.workdir, MODEL_RECORD), model_record(data))
        summary = os.path.join(self.workdir, "summary.json")
        if retrain and os.path.exists(summary):
            os.remove(summary)  # trained again: not finished until its new summary

    def data_state(self, epoch: int) -> dict:
        """The data pipeline's state saved with the checkpoint after ``epoch`` (streamed runs:
        Grain's iterator state, where the next epoch's batches begin)."""
        import orbax.checkpoint as ocp

        try:
            args = ocp.args.Composite(**{DATA_ITERATOR: ocp.args.JsonRestore()})
            return self.manager.restore(epoch, args=args)[DATA_ITERATOR]
        except Exception as error:  # orbax raises many kinds
            folder = os.path.join(self.checkpoint_dir, str(epoch), DATA_ITERATOR)
            raise DamagedFile(
                f"the data pipeline's state {folder} cannot be read ({type(error).__name__}); "
                f"move {os.path.dirname(folder)} out of {self.checkpoint_dir} to resume from the "
                "checkpoint before it, or choose a new --workdir."
            ) from error

    def commit_epoch(
        self, history: list[dict], state, *, save: bool, data_state: dict | None = None
    ) -> None:
        """Writes the epoch's metrics row, then (``save``) its checkpoint; a streamed run saves
        ``data_state`` (its pipeline's state) with it."""
        import orbax.checkpoint as ocp

        if self.is_main:
            write_metrics(self.metrics_path, history)
        if not save:
            return
        args = ocp.args.StandardSave(state)
        if self.streaming:
            items = {"default": args, DATA_ITERATOR: ocp.args.JsonSave(data_state)}
            args = ocp.args.Composite(**items)
        self.manager.save(history[-1]["epoch"], args=args)

    def wait(self) -> int | None:
        """Waits for in-flight saves; the newest saved epoch (``None`` if none)."""
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def finish(self, evaluation: dict, summary: dict) -> None:
        if self.is_main:
            write_json(os.path.join(self.workdir, "evaluation.json"), evaluation)
            # Last: a summary marks a finished run (a sweep skips such a cell).
            write_json(os.path.join(self.workdir, "summary.json"), summary)

    def close_checkpoints(self) -> None:
        """Waits for in-flight saves and orbax's deletions (both end whole)."""
        if self._manager is not None:
            manager, self._manager = self._manager, None
            manager.close()

    def close(self) -> None:
        """Closes the checkpoints, then lets go of the folder; safe to call twice."""
        try:
            self.close_checkpoints()
        finally:
            if self._lock is not None:
                lock, self._lock = self._lock, None
                lock.close()


class _Hold:
    """An ``flock`` on a folder's own descriptor; ``close`` lets go and removes the folder if
    this hold made it and it is still empty (a run refused before writing leaves nothing)."""

    def __init__(self, descriptor: int, workdir: str, made: bool):
        self.descriptor, self.workdir, self.made = descriptor, workdir, made

    def close(self) -> None:
        os.close(self.descriptor)
        if self.made and os.path.isdir(self.workdir) and not os.listdir(self.workdir):
            os.rmdir(self.workdir)


def _lock_holder(path: str) -> str:
    """The pid holding an ``flock`` on ``path``, from ``/proc/locks`` (Linux); else a phrase."""
    inode = os.stat(path).st_ino
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF" (a "->" marks waiters)
                if "FLOCK" in fields and "->" not in fields and len(fields) >= 6:
                    if fields[5].rsplit(":", 1)[-1] == str(inode):
                        return f"pid {fields[4]}"
    except OSError:
        pass
    return "another process"


@contextlib.contextmanager
def held(workdir: str, *, is_main: bool = True):
    """Holds ``workdir`` (on the main process) for the block: a sweep or study folder."""
    hold = hold_folder(workdir) if is_main else None
    try:
        yield
    finally:
        if hold is not None:
            hold.close()


def hold_folder(workdir: str) -> _Hold:
    """Holds ``workdir`` for this run, or refuses (:class:`FolderInUse`) naming the holder.

    The hold is an advisory ``flock`` on the folder itself (no lock file to leave behind); the
    operating system drops it when its process ends, however it ends (``kill -9`` included), so
    a stopped run never keeps its folder held. Close the returned hold to let go.
    """
    import fcntl

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise config_lib.ConfigError(f"--workdir {workdir} is a file; name a folder.")
    made = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    descriptor = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise FolderInUse(
            f"{workdir} is in use by a running jaxdann process ({_lock_holder(workdir)}); wait "
            "for it to finish or choose another --workdir."
        ) from None
    return _Hold(descriptor, workdir, made)

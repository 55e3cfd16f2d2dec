"""TensorBoard event files in a run folder: every epoch's metrics and the run's figures.

``tensorboard --logdir runs/`` then shows every run under ``runs/`` side by side, named by its
folder. ``metrics.jsonl`` stays the record the tools read; the events are a view of it. A run
that (re)starts rewrites its events from the rows it resumes from, so an epoch trained again
after an interruption appears once, as in ``metrics.jsonl``. Written with tensorboardX's event
file writer (no TensorFlow), in the calling thread.

The log is best-effort: a write that fails (a full disk, an I/O error) warns once, naming the
folder and the error, and turns the log off; the run goes on. Events are written synchronously,
not through tensorboardX's ``SummaryWriter``, whose writer thread dies on such an error and whose
queue then blocks the next write forever.
"""

from __future__ import annotations

import glob
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["EVENT_PREFIX", "EventLog", "scalars"]

EVENT_PREFIX = "events.out.tfevents."  # how TensorBoard's event files are named


def scalars(row: Mapping, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics row by tag (nested dicts as ``outer/inner``); the
    epoch itself, booleans, lists and missing values are left out."""
    tags = {}
    for key, value in row.items():
        if key == "epoch" and not prefix:
            continue
        if isinstance(value, Mapping):
            tags |= scalars(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                tags[f"{prefix}{key}"] = float(value)
    return tags


class EventLog:
    """The run's event file, written from the rows it starts from; ``enabled=False`` (a
    process other than the first) writes nothing. No method raises: the first error turns the
    log off with a warning."""

    def __init__(self, workdir: str, history: Iterable[Mapping], *, enabled: bool = True):
        self.workdir, self._writer = workdir, None
        if not enabled:
            return
        try:
            from tensorboardX.event_file_writer import EventsWriter

            for path in glob.glob(os.path.join(workdir, f"{EVENT_PREFIX}*")):
                os.remove(path)  # rewritten below from the rows the run keeps
            os.makedirs(workdir, exist_ok=True)
            # The file is named "events" + ".out.tfevents.<time>.<host>" (EVENT_PREFIX).
            self._writer = EventsWriter(os.path.join(workdir, "events"))
            for row in history:
                self._write_scalars(row)
            self._writer.flush()
        except Exception as error:
            self._turn_off(error)

    def write_epoch(self, row: Mapping) -> None:
        """One metrics row, at step ``row["epoch"]``, flushed to disk."""
        if self._writer is None:
            return
        try:
            self._write_scalars(row)
            self._writer.flush()
        except Exception as error:
            self._turn_off(error)

    def write_figures(self, paths: Mapping[str, str], epoch: int) -> None:
        """PNG figures (``{tag: path}``) as images at step ``epoch``; absent files are skipped."""
        if self._writer is None:
            return
        try:
            from PIL import Image
            from tensorboardX.summary import image

            for tag, path in paths.items():
                if os.path.exists(path):
                    with Image.open(path) as picture:
                        pixels = np.asarray(picture.convert("RGB"))
                    self._write(image(tag, pixels, dataformats="HWC"), epoch)
            self._writer.flush()
        except Exception as error:
            self._turn_off(error)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as error:
                self._turn_off(error)

    def _write_scalars(self, row: Mapping) -> None:
        from tensorboardX.summary import scalar

        for tag, value in scalars(row).items():
            self._write(scalar(tag, value), int(row["epoch"]))

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._writer.write_event(Event(summary=summary, step=step, wall_time=time.time()))

    def _turn_off(self, error: Exception) -> None:
        """Warns once and writes nothing more; the half-written file is left as it is."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass  # already failing: the first error is the one reported
        warnings.warn(
            f"{self.workdir}: TensorBoard event log turned off ({type(error).__name__}: {error})",
            RuntimeWarning,
            stacklevel=3,
        )

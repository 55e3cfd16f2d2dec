"""TensorBoard event files: every epoch metric and the figures, each epoch once after a resume.

The event files are read back without TensorFlow or TensorBoard: TFRecord framing (length,
its CRC, the record, its CRC) around ``Event`` protocol buffers, parsed with tensorboardX's own
generated classes.
"""

import glob
import json
import os
import struct
import threading
import warnings

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.training.tensorboard import EVENT_PREFIX, EventLog, scalars
from jaxdann.training.trainer import Study, train_and_evaluate

pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def read_events(folder):
    """``({tag: [(step, value), ...]}, {tag: [(step, height, width), ...]})`` of every event
    file in ``folder``."""
    values, images = {}, {}
    for path in sorted(glob.glob(os.path.join(folder, f"{EVENT_PREFIX}*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("image"):
                    shape = (event.step, value.image.height, value.image.width)
                    images.setdefault(value.tag, []).append(shape)
                else:
                    values.setdefault(value.tag, []).append((event.step, value.simple_value))
    return values, images


def tiny_config(**overrides):
    config = config_lib.demo_config()
    config.epochs = 2
    config.batch_size = 16
    config.data.limit = 40  # 3 steps per epoch
    config.parallel.num_devices = 1
    config.log_every_epoch = False
    return config_lib.apply_overrides(config, {k: str(v) for k, v in overrides.items()})


def test_scalars_flattens_nested_rows_and_leaves_out_what_is_no_number():
    row = {
        "epoch": 3,
        "class_loss": 0.5,
        "validation_accuracy": None,
        "validators": {"im": 1.25, "dev": None, "snd": float("nan")},
        "flag": True,
        "per_class": [0.1, 0.2],
    }
    assert scalars(row) == {"class_loss": 0.5, "validators/im": 1.25}


def test_an_event_log_rewrites_the_rows_it_starts_from(tmp_path):
    folder = str(tmp_path)
    log = EventLog(folder, [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}])
    log.write_epoch({"epoch": 3, "loss": 1.0})
    log.close()
    # Restarted from the row after epoch 1: epochs 2 and 3 are written again, once each.
    log = EventLog(folder, [{"epoch": 1, "loss": 3.0}])
    log.write_epoch({"epoch": 2, "loss": 1.5})
    log.close()
    values, _ = read_events(folder)
    assert values == {"loss": [(1, 3.0), (2, 1.5)]}
    EventLog(folder, [], enabled=False).write_epoch({"epoch": 9, "loss": 0.0})
    assert read_events(folder)[0] == values  # a process other than the first writes nothing


def test_a_restarted_run_has_every_metric_once_per_epoch_and_its_figures(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(checkpoint_every_epochs=0)  # no checkpoint: a cut run starts over

    class Cut(Exception):
        pass

    def cut(step):
        if step == 4:  # epoch 2, after epoch 1's row and events were written
            raise Cut

    study = Study(figures=True)  # both attempts share the compiled steps
    with pytest.raises(Cut):
        train_and_evaluate(config, workdir, progress=False, on_step=cut, study=study)
    assert [step for step, _ in read_events(workdir)[0]["class_loss"]] == [1]
    train_and_evaluate(config, workdir, progress=False, study=study)

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    values, images = read_events(workdir)
    expected = {}
    for row in rows:
        for tag, value in scalars(row).items():
            expected.setdefault(tag, []).append((row["epoch"], value))
    assert set(values) == set(expected)
    assert {"target_accuracy", "class_loss", "validators/im", "validators/dev"} <= set(values)
    for tag, points in values.items():
        steps = [step for step, _ in points]
        want = expected[tag]
        assert steps == [step for step, _ in want], tag  # each epoch once
        # Event files hold float32 scalars.
        np.testing.assert_array_equal(
            [value for _, value in points], np.float32([value for _, value in want]), tag
        )
    assert [shape[0] for shape in images["figures/curves"]] == [2]
    assert [shape[0] for shape in images["figures/confusion"]] == [2]
    assert all(height > 100 and width > 100 for _, height, width in images["figures/curves"])


def test_a_failing_event_file_warns_once_and_the_run_ends_whole(tmp_path, monkeypatch):
    from tensorboardX import record_writer

    calls = []
    original_write = record_writer.RecordWriter.write

    def write_until_the_disk_is_full(self, data):
        calls.append(len(data))
        if len(calls) > 5:  # the first epoch's scalars fail part-way
            raise OSError(28, "No space left on device")
        original_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write_until_the_disk_is_full)
    workdir = str(tmp_path / "run")
    outcome = {}

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome["summary"] = train_and_evaluate(tiny_config(), workdir, progress=False)
            except BaseException as error:  # reported below, in the test's thread
                outcome["error"] = error
        outcome["warnings"] = [str(w.message) for w in caught if "TensorBoard" in str(w.message)]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run hung on its event file"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["warnings"] == [
        f"{workdir}: TensorBoard event log turned off (OSError: [Errno 28] No space left on device)"
    ]
    assert len(calls) == 6  # nothing more was written once the log was off
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    assert "2" in os.listdir(os.path.join(workdir, "checkpoints"))  # the last epoch saved
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["epochs"] == outcome["summary"]["epochs"] == 2


def test_a_run_lets_go_of_its_folder_whatever_its_event_log_does(tmp_path, monkeypatch):
    from jaxdann.training.run_folder import hold_folder

    def close_fails(self):
        raise RuntimeError("event file close failed")

    monkeypatch.setattr(EventLog, "close", close_fails)
    workdir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="event file close failed"):
        train_and_evaluate(tiny_config(epochs=1), workdir, progress=False)
    hold_folder(workdir).close()  # FolderInUse if the run still held it
    assert os.path.exists(os.path.join(workdir, "summary.json"))

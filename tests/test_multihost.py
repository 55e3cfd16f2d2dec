"""Two processes on one machine (2 CPU devices each) train like one process with 4 devices."""

import csv
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.methods import get_method
from jaxdann.training.trainer import train_and_evaluate

KEYS = (*get_method("dann").epoch_metrics, "target_accuracy")
OVERRIDES = [
    "--config.epochs=2",
    "--config.batch_size=16",
    "--config.data.limit=40",
    "--config.log_every_epoch=false",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _run_two_processes(
    workdir,
    overrides,
    *,
    expect_success=True,
    timeout=300,
    module="jaxdann.train",
    process_overrides=((), ()),
):
    """``python -m MODULE`` as 2 processes x 2 CPU devices (``process_overrides``: each one's
    own extra arguments); returns their outputs."""
    port = _free_port()
    processes = []
    for process_id in range(2):
        env = dict(os.environ)
        env |= {
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(process_id),
        }
        command = [sys.executable, "-m", module, "--workdir", workdir, *overrides]
        command += process_overrides[process_id]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"the two-process run did not finish in {timeout} s")
        outputs.append(out.decode())
        assert (process.returncode == 0) == expect_success, out.decode()[-3000:]
    return outputs


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_two_processes_match_one_process_with_four_devices(tmp_path):
    config = config_lib.apply_overrides(
        config_lib.demo_config(), dict(o[len("--config.") :].split("=") for o in OVERRIDES)
    )
    config.parallel.num_devices = 4
    single = str(tmp_path / "single")
    train_and_evaluate(config, single, progress=False)

    multi = str(tmp_path / "multi")
    outputs = _run_two_processes(multi, OVERRIDES)
    with open(os.path.join(multi, "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_processes"] == 2 and summary["num_devices"] == 4
    for a, b in zip(_rows(single), _rows(multi), strict=True):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    # Only process 0 reports.
    assert sum("done: target accuracy" in out for out in outputs) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_each_host_loads_and_reads_only_its_own_shard(tmp_path):
    workdir = str(tmp_path / "sharded")
    _run_two_processes(workdir, [*OVERRIDES, "--config.data.shard_per_host=true"])
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_processes"] == 2 and summary["data_sharded_per_host"]
    # data.limit=40 applies per shard as ceil(40 / 2): each process held 20 of each split.
    for split in ("source", "target", "target_eval", "validation"):
        assert summary["rows_per_process"][split] == [20, 20], split
    with open(os.path.join(workdir, "evaluation.json")) as f:
        evaluation = json.load(f)
    assert sum(map(sum, evaluation["confusion_matrix"])) == 40  # both shards were evaluated
    rows = _rows(workdir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(np.isfinite(row[key]) for row in rows for key in KEYS)
    # One checkpoint per epoch, written once for both processes.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
    # The data record holds each process's shard: 20 images each, different ones.
    with open(os.path.join(workdir, "data.json")) as f:
        shards = json.load(f)["processes"]
    assert [shard["source"]["images"] for shard in shards] == [20, 20]
    assert shards[0]["source"]["crc32"] != shards[1]["source"]["crc32"]
    # CRC-32s as 8 hex digits: gathered across processes without being cut to 32 signed bits.
    assert all(re.fullmatch("[0-9a-f]{8}", shard["source"]["crc32"]) for shard in shards)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_processes_reading_different_data_are_all_refused(tmp_path):
    # Without data.shard_per_host every process must hold the same data: process 1 holds 39
    # images of each split here, process 0 40. Both stop with the same one-line refusal.
    outputs = _run_two_processes(
        str(tmp_path / "run"),
        OVERRIDES,
        expect_success=False,
        timeout=120,
        process_overrides=((), ("--config.data.limit=39",)),
    )
    for out in outputs:
        assert "error: process(es) 1 read other data than process 0" in out, out[-2000:]


def _tiny_pacs_flags(tiny_pacs_overrides, root, tmp_path):
    """The ``tiny_pacs_overrides`` settings as flags, for one epoch over every device."""
    settings = tiny_pacs_overrides(root, tmp_path / "cache") | {"data.name": "pacs", "epochs": "1"}
    del settings["parallel.num_devices"]
    return [f"--config.{key}={value}" for key, value in settings.items()]


@pytest.mark.slow  # the shared verdict runs by default: test_data_one_process_cannot_load_...
@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_a_bad_image_in_one_shard_stops_every_process(
    tmp_path, write_pacs_tree, tiny_pacs_overrides
):
    root = tmp_path / "pacs"
    write_pacs_tree(root)
    # Listing order is class, then file: photo/cat/1.png is row 1, in process 1's shard.
    (root / "photo" / "cat" / "1.png").write_bytes(b"not a png")
    overrides = [
        "--config.data.shard_per_host=true",
        *_tiny_pacs_flags(tiny_pacs_overrides, root, tmp_path),
    ]
    # Without the shared verdict, process 0 would wait for process 1 until the timeout.
    outputs = _run_two_processes(str(tmp_path / "run"), overrides, expect_success=False, timeout=90)
    assert "process 1 could not load its data shard" in outputs[1]
    assert "1.png" in outputs[1]
    assert "process(es) 1 could not load their data shard" in outputs[0]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_data_one_process_cannot_load_stops_every_process(
    tmp_path, write_pacs_tree, tiny_pacs_overrides
):
    # Without data.shard_per_host every process loads all the data: process 1's is missing here.
    root = tmp_path / "pacs"
    write_pacs_tree(root)
    missing = f"--config.data.root={tmp_path / 'not_here'}"
    outputs = _run_two_processes(
        str(tmp_path / "run"),
        _tiny_pacs_flags(tiny_pacs_overrides, root, tmp_path),
        expect_success=False,
        timeout=90,
        process_overrides=((), (missing,)),
    )
    assert "process 1 could not load its data: " in outputs[1] and "not_here" in outputs[1]
    assert "process(es) 1 could not load their data (see their output)" in outputs[0]
    # jaxdann.pairs loads its domains the same way.
    outputs = _run_two_processes(
        str(tmp_path / "pairs"),
        [
            "--domains=photo,sketch",
            "--seeds=0",
            *_tiny_pacs_flags(tiny_pacs_overrides, root, tmp_path),
        ],
        expect_success=False,
        timeout=90,
        module="jaxdann.pairs",
        process_overrides=((), (missing,)),
    )
    assert "process 1 could not load its data: " in outputs[1] and "not_here" in outputs[1]
    assert "process(es) 1 could not load their data (see their output)" in outputs[0]


@pytest.mark.slow  # two processes x two cells; the two-process run itself runs by default
@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives are tested on Linux")
def test_a_sweep_on_two_processes_trains_every_cell_and_reports_once(tmp_path):
    workdir = str(tmp_path / "grid")
    grid = ["--learning_rates", "0.01,0.001", "--optimizers", "sgd", "--config.epochs=1"]
    overrides = [*grid, *OVERRIDES[1:]]
    outputs = _run_two_processes(workdir, overrides, module="jaxdann.sweep")
    with open(os.path.join(workdir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(row["learning_rate"], row["status"]) for row in rows] == [
        ("0.01", "trained"),
        ("0.001", "trained"),
    ]
    for row in rows:
        with open(os.path.join(row["run_folder"], "summary.json")) as f:
            summary = json.load(f)
        assert summary["num_processes"] == 2 and summary["num_devices"] == 4
        assert float(row["validation_accuracy"]) == summary["validation_accuracy"]
    assert os.path.exists(os.path.join(workdir, "heatmap_validation.png"))
    # Process 0 alone names the cells and the choice (and writes the table and figures).
    assert [out.count("best by validation") for out in outputs] == [1, 0]
    assert [len(re.findall(r"cell \d/2: dann sgd", out)) for out in outputs] == [2, 0]

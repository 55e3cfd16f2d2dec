"""The training loop on the embedded demo: outputs, resumption, determinism, divergence."""

import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from jaxdann import config as config_lib
from jaxdann import plots, sweep
from jaxdann.data import pipeline as input_pipeline
from jaxdann.errors import DataError
from jaxdann.training import run_folder
from jaxdann.training.trainer import TrainingDiverged, train_and_evaluate

SPLITS = input_pipeline.FINGERPRINT_SPLITS
TRAINING_KEYS = (
    "learning_rate",
    "grl_coefficient",
    "class_loss",
    "source_accuracy",
    "domain_loss_source",
    "domain_loss_target",
    "domain_accuracy_source",
    "domain_accuracy_target",
)


def tiny_config(**overrides):
    """The demo with a few images and epochs, on one device: seconds, not minutes."""
    config = config_lib.demo_config()
    config.epochs = 3
    config.batch_size = 16
    config.data.limit = 40  # 3 steps per epoch, the last one short (8 of 16)
    config.parallel.num_devices = 1
    config.log_every_epoch = False
    return config_lib.apply_overrides(config, {k: str(v) for k, v in overrides.items()})


def read_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def training_part(rows):
    return [{k: row[k] for k in ("epoch", *TRAINING_KEYS, "target_accuracy")} for row in rows]


def test_run_folder_has_every_output(tmp_path):
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(tiny_config(), workdir, progress=False)
    for name in ("config.json", "metrics.jsonl", "summary.json", "evaluation.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    for name in ("curves.png", "confusion.png"):
        with open(os.path.join(workdir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]  # keeps 2
    rows = read_rows(workdir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        for key in (*TRAINING_KEYS, "target_accuracy"):
            assert np.isfinite(row[key]), key
        # The DANN ramp towards the configured maximum, averaged over the epoch.
        assert 0 < row["grl_coefficient"] <= config_lib.demo_config().grl.coefficient
    assert rows[0]["grl_coefficient"] < rows[-1]["grl_coefficient"]
    assert "validation_accuracy" in rows[-1]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["batch_size"] == 16
    with open(os.path.join(workdir, "evaluation.json")) as f:
        evaluation = json.load(f)
    matrix = np.asarray(evaluation["confusion_matrix"])
    assert matrix.sum() == 40 and matrix.shape == (10, 10)
    assert evaluation["target_accuracy"] == pytest.approx(np.trace(matrix) / 40)
    assert summary["final_target_accuracy"] == rows[-1]["target_accuracy"]
    assert summary["num_devices"] == 1 and summary["epochs"] == 3

    # Rerunning a finished run trains nothing and reports the same numbers.
    def no_training(step):
        raise AssertionError(f"step {step} ran again")

    again = train_and_evaluate(tiny_config(), workdir, progress=False, on_step=no_training)
    assert again["final_target_accuracy"] == summary["final_target_accuracy"]
    assert read_rows(workdir) == rows


def test_checkpoint_every_zero_saves_none(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=1, checkpoint_every_epochs=0)
    train_and_evaluate(config, workdir, progress=False)
    assert os.listdir(os.path.join(workdir, "checkpoints")) == []
    assert os.path.exists(os.path.join(workdir, "summary.json"))
    first = read_rows(workdir)
    # Nothing to resume from: the same command trains again from the start, to the same result.
    train_and_evaluate(config, workdir, progress=False)
    assert training_part(read_rows(workdir)) == training_part(first)


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    first = train_and_evaluate(tiny_config(epochs=2), str(tmp_path / "a"), progress=False)
    second = train_and_evaluate(tiny_config(epochs=2), str(tmp_path / "b"), progress=False)
    other = train_and_evaluate(tiny_config(epochs=2, seed=1), str(tmp_path / "c"), progress=False)
    a, b = training_part(read_rows(tmp_path / "a")), training_part(read_rows(tmp_path / "b"))
    assert a == b
    assert a != training_part(read_rows(tmp_path / "c"))
    assert first["final_target_accuracy"] == second["final_target_accuracy"]
    del other


class Interrupt(Exception):
    pass


def test_interrupted_mid_epoch_and_resumed_equals_unbroken(tmp_path):
    unbroken = str(tmp_path / "unbroken")
    train_and_evaluate(tiny_config(epochs=3), unbroken, progress=False)

    broken = str(tmp_path / "broken")

    def crash(step):
        if step == 4:  # the middle of epoch 2 (3 steps per epoch)
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(tiny_config(epochs=3), broken, progress=False, on_step=crash)
    assert [row["epoch"] for row in read_rows(broken)] == [1]
    train_and_evaluate(tiny_config(epochs=3), broken, progress=False)
    assert training_part(read_rows(broken)) == training_part(read_rows(unbroken))


def test_larger_epochs_extends_a_finished_run(tmp_path):
    # A constant coefficient and StepLR: the DANN ramp and the annealed learning rate depend on
    # the run's total length by definition.
    constant = {"grl.schedule": "constant", "optimizer.schedule": "step"}
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(epochs=2, **constant), workdir, progress=False)
    train_and_evaluate(tiny_config(epochs=3, **constant), workdir, progress=False)
    reference = str(tmp_path / "reference")
    train_and_evaluate(tiny_config(epochs=3, **constant), reference, progress=False)
    assert training_part(read_rows(workdir)) == training_part(read_rows(reference))


def test_resuming_with_a_different_config_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(epochs=1), workdir, progress=False)
    with pytest.raises(
        config_lib.ConfigError, match=r"different config \(optimizer\.name: 'sgd', now 'adam'\)"
    ):
        train_and_evaluate(tiny_config(epochs=1, **{"optimizer.name": "adam"}), workdir)


def test_fewer_epochs_than_trained_is_refused_and_the_run_kept(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(epochs=2), workdir, progress=False)
    with open(os.path.join(workdir, "config.json")) as f:
        config_before = f.read()
    with pytest.raises(config_lib.ConfigError, match="trained 2 epochs, more than epochs=1"):
        train_and_evaluate(tiny_config(epochs=1), workdir, progress=False)
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == config_before
    assert [row["epoch"] for row in read_rows(workdir)] == [1, 2]


def test_resuming_may_change_how_a_run_reports_not_what_it_trains(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(epochs=1), workdir, progress=False)
    reporting = {
        "log_every_epoch": "true",
        "eval.validation_every_epoch": "true",
        "eval_batch_size": "8",
        "checkpoint_every_epochs": "2",
    }
    train_and_evaluate(tiny_config(epochs=3, **reporting), workdir, progress=False)
    rows = read_rows(workdir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # Validation every epoch from the resumption on, not only at the last one.
    assert all(row["validation_accuracy"] is not None for row in rows[1:])
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["eval"]["validation_every_epoch"] is True
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write('{"epochs": 3, "se')  # a damaged file is named, not a bare JSON error
    with pytest.raises(run_folder.DamagedFile, match="config.json is not valid JSON"):
        train_and_evaluate(tiny_config(epochs=3), workdir, progress=False)


def test_a_run_that_cannot_load_its_data_leaves_no_folder(tmp_path):
    config = config_lib.apply_overrides(
        config_lib.base_config(),
        {"data.root": str(tmp_path / "no_pacs_here"), "model.pretrained": "none"},
    )
    workdir = tmp_path / "run"
    with pytest.raises(DataError, match="no_pacs_here"):
        train_and_evaluate(config, str(workdir), progress=False)
    assert not workdir.exists()


def test_the_demo_without_validation_reports_none(tmp_path):
    summary = train_and_evaluate(
        tiny_config(epochs=1, **{"data.validation": "none"}), str(tmp_path / "run"), progress=False
    )
    assert summary["validation_accuracy"] is None
    assert read_rows(str(tmp_path / "run"))[0].get("validation_accuracy") is None


def test_target_labels_never_change_training(tmp_path, monkeypatch):
    reference = str(tmp_path / "reference")
    train_and_evaluate(tiny_config(epochs=2), reference, progress=False)
    original = input_pipeline.load_experiment_data

    def permuted_target_labels(config, **kwargs):
        data = original(config, **kwargs)
        shuffled = np.random.default_rng(0).permutation(data.target.labels)
        assert not np.array_equal(shuffled, data.target.labels)
        target = input_pipeline.Split(data.target.images, shuffled)
        return input_pipeline.ExperimentData(
            data.source,
            target,
            data.target_eval,
            data.validation,
            data.class_names,
            data.mean,
            data.std,
        )

    monkeypatch.setattr(input_pipeline, "load_experiment_data", permuted_target_labels)
    permuted = str(tmp_path / "permuted")
    train_and_evaluate(tiny_config(epochs=2), permuted, progress=False)
    assert training_part(read_rows(permuted)) == training_part(read_rows(reference))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    # A normal first epoch, then StepLR multiplies the learning rate by 1e30.
    explode = {"optimizer.schedule": "step", "optimizer.step_size": 1, "optimizer.gamma": 1e30}
    kept = re.escape(f"the checkpoint after epoch 1 in {workdir}/checkpoints is kept; lower")
    with pytest.raises(
        TrainingDiverged, match=rf"non-finite loss at step [3-5] \(epoch 2\); {kept}"
    ):
        train_and_evaluate(tiny_config(epochs=3, **explode), workdir, progress=False)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
    assert [row["epoch"] for row in read_rows(workdir)] == [1]


def test_an_update_to_non_finite_parameters_stops_before_the_epoch_is_scored(tmp_path):
    workdir = str(tmp_path / "run")
    # One step per epoch: epoch 2's step computes a finite loss, then steps with an infinite
    # learning rate; the epoch is neither scored nor saved, and no later loss is needed.
    explode = {"optimizer.schedule": "step", "optimizer.step_size": 1, "optimizer.gamma": "inf"}
    config = tiny_config(epochs=3, **explode, **{"data.limit": 16})
    kept = re.escape(f"the checkpoint after epoch 1 in {workdir}/checkpoints is kept")
    with pytest.raises(
        TrainingDiverged, match=rf"non-finite parameters after step 1 \(epoch 2\); {kept}"
    ):
        train_and_evaluate(config, workdir, progress=False)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
    assert [row["epoch"] for row in read_rows(workdir)] == [1]


def test_source_only_overfits_a_small_set(tmp_path):
    one_batch = {"data.limit": 32, "batch_size": 32, "optimizer.name": "adam"}
    config = tiny_config(epochs=25, adaptation="none", **one_batch)
    train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    rows = read_rows(tmp_path / "run")
    assert rows[-1]["source_accuracy"] == 1.0
    assert rows[-1]["class_loss"] < 0.1 * rows[0]["class_loss"]
    # A row holds the method's metrics only: source only has no domain columns.
    assert "domain_loss_source" not in rows[-1] and "grl_coefficient" not in rows[-1]


def test_one_and_four_devices_give_the_same_metrics(tmp_path):
    import jax

    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (set in conftest)")
    one = str(tmp_path / "one")
    four = str(tmp_path / "four")
    # batch 18 does not divide by 4: the padded, masked rows must not count.
    train_and_evaluate(tiny_config(epochs=2, batch_size=18), one, progress=False)
    summary = train_and_evaluate(
        tiny_config(epochs=2, batch_size=18, **{"parallel.num_devices": 4}), four, progress=False
    )
    assert summary["num_devices"] == 4
    for a, b in zip(read_rows(one), read_rows(four), strict=True):
        for key in (*TRAINING_KEYS, "target_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_host_shards_are_independent_of_device_count_and_resume_exactly(tmp_path):
    import jax

    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (set in conftest)")
    sharded = {"data.shard_per_host": True, "batch_size": 18}
    one, four = str(tmp_path / "one"), str(tmp_path / "four")
    summary = train_and_evaluate(tiny_config(epochs=2, **sharded), one, progress=False)
    assert summary["data_sharded_per_host"] and summary["rows_per_process"]["source"] == [40]
    # Shard streams depend on (seed, process, step), not on how many devices share a batch.
    train_and_evaluate(
        tiny_config(epochs=2, **sharded, **{"parallel.num_devices": 4}), four, progress=False
    )
    for a, b in zip(read_rows(one), read_rows(four), strict=True):
        for key in (*TRAINING_KEYS, "target_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    # Stopped in the middle of epoch 2 and resumed: exactly the unbroken run.
    broken = str(tmp_path / "broken")

    def crash(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(tiny_config(epochs=2, **sharded), broken, progress=False, on_step=crash)
    train_and_evaluate(tiny_config(epochs=2, **sharded), broken, progress=False)
    assert training_part(read_rows(broken)) == training_part(read_rows(one))
    with open(os.path.join(one, "evaluation.json")) as f:
        assert np.sum(json.load(f)["confusion_matrix"]) == 40  # every target test image


def test_a_sharded_run_resumes_only_on_as_many_processes(tmp_path):
    from jaxdann.training import feed

    workdir = str(tmp_path)
    feed.check_process_count(workdir, resuming=False)
    assert not (tmp_path / "shards.json").exists()  # written only once the run has started
    feed.record_process_count(workdir)
    with open(tmp_path / "shards.json") as f:
        assert json.load(f) == {"process_count": 1}
    feed.check_process_count(workdir, resuming=True)  # same count: fine
    (tmp_path / "shards.json").write_text('{"process_count": 2}')
    with pytest.raises(ValueError, match="on 2 processes; resume it on 2"):
        feed.check_process_count(workdir, resuming=True)


@pytest.mark.slow  # 2 x 12 epochs; test_methods_bf16 checks the bfloat16 step by default
def test_bfloat16_reaches_float32_accuracy_on_the_demo(tmp_path):
    common = {
        "epochs": 12,
        "data.limit": 200,
        "batch_size": 32,
        "optimizer.name": "adam",
        "optimizer.learning_rate": 1e-3,
    }
    f32 = train_and_evaluate(tiny_config(**common), str(tmp_path / "f32"), progress=False)
    bf16 = train_and_evaluate(
        tiny_config(**common, **{"model.dtype": "bfloat16"}), str(tmp_path / "bf16"), progress=False
    )
    assert f32["final_source_accuracy"] > 0.8  # it did learn
    # Within noise: 200 target test images, so one standard error is about 0.035.
    assert abs(bf16["final_target_accuracy"] - f32["final_target_accuracy"]) < 0.08
    assert abs(bf16["final_source_accuracy"] - f32["final_source_accuracy"]) < 0.05


def test_missing_weights_file_is_one_sentence_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(
        input_pipeline,
        "load_experiment_data",
        lambda *a, **k: pytest.fail("data were loaded before the weights were checked"),
    )
    config = tiny_config(**{"model.pretrained": str(tmp_path / "alexnet.msgpack")})
    with pytest.raises(FileNotFoundError, match=r"python -m jaxdann\.convert .*pretrained=none"):
        train_and_evaluate(config, str(tmp_path / "run"), progress=False)


@pytest.mark.parametrize("command", ["train", "sweep", "pairs"])
def test_every_command_names_a_missing_weights_file_in_one_line(tmp_path, capsys, command):
    from jaxdann import pairs, sweep, train

    main = {"train": train.main, "sweep": sweep.main, "pairs": pairs.main}[command]
    missing = tmp_path / "alexnet.msgpack"
    flags = ["--workdir", str(tmp_path / "study"), f"--config.model.pretrained={missing}"]
    if command == "pairs":  # a dataset of two domains (pairs reads the root's domains first)
        for domain in ("day", "night"):
            os.makedirs(tmp_path / "tree" / domain / "cat")
            Image.new("RGB", (8, 8)).save(tmp_path / "tree" / domain / "cat" / "0.png")
        flags += ["--config.data.name=folder", f"--config.data.root={tmp_path / 'tree'}"]
        flags += ["--config.data.source=day", "--config.data.target=night"]
        flags += ["--config.data.validation=none"]
    assert main(flags) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: weights file") and "\n" not in error, error
    assert "python -m jaxdann.convert" in error


def test_a_resumed_run_needs_no_weights_file(tmp_path):
    from jaxdann.convert import save_params
    from jaxdann.training.model_setup import build_from_config, initial_variables

    config = tiny_config(epochs=1)
    network, method = build_from_config(config, 10, mean=0.5, std=0.25)
    params, _ = initial_variables(network, method, (28, 28, 3), jax.random.key(3))
    weights = str(tmp_path / "cnn.msgpack")
    save_params({key: params[key] for key in ("features", "classifier")}, weights)
    workdir = str(tmp_path / "run")
    train_and_evaluate(
        tiny_config(epochs=1, **{"model.pretrained": weights}), workdir, progress=False
    )
    os.remove(weights)  # e.g. resumed from another directory, with a relative path
    summary = train_and_evaluate(
        tiny_config(epochs=2, **{"model.pretrained": weights}), workdir, progress=False
    )
    assert summary["epochs"] == 2
    with pytest.raises(FileNotFoundError, match="weights file"):  # a new run does need it
        train_and_evaluate(
            tiny_config(**{"model.pretrained": weights}), str(tmp_path / "new"), progress=False
        )


def test_pretrained_weights_load_into_the_dann_model(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    import jax

    from jaxdann.convert import save_params, torchvision_to_flax
    from jaxdann.training.model_setup import build_from_config, initial_variables, read_pretrained

    torch.manual_seed(0)
    converted = torchvision_to_flax(torchvision.models.alexnet(weights=None).state_dict())
    path = str(tmp_path / "alexnet.msgpack")
    save_params(converted, path)
    config = config_lib.base_config()
    config.model.pretrained = path
    pretrained = read_pretrained(config)
    network, method = build_from_config(config, 7)
    params, _ = initial_variables(network, method, (63, 63, 3), jax.random.PRNGKey(0), pretrained)
    np.testing.assert_array_equal(
        params["features"]["conv3"]["kernel"], converted["features"]["conv3"]["kernel"]
    )
    assert params["classifier"]["output"]["kernel"].shape == (4096, 7)  # fresh 7-way layer
    for layer in ("hidden_0", "hidden_1"):  # the seed copies them into the domain classifier
        np.testing.assert_array_equal(
            params["domain_classifier"][layer]["kernel"], converted["classifier"][layer]["kernel"]
        )

    # A file that is not a weights file is reported before any data are loaded.
    monkeypatch.setattr(
        input_pipeline,
        "load_experiment_data",
        lambda *a, **k: pytest.fail("data were loaded before the weights were read"),
    )
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00 not msgpack")
    with pytest.raises(Exception, match="not a jaxdann weights file"):
        train_and_evaluate(tiny_config(**{"model.pretrained": str(junk)}), str(tmp_path / "run"))


def test_grl_warmup_epochs_hold_the_coefficient_at_zero(tmp_path):
    config = tiny_config(epochs=2, **{"grl.warmup_epochs": 1, "grl.schedule": "constant"})
    train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    rows = read_rows(str(tmp_path / "run"))
    assert rows[0]["grl_coefficient"] == 0.0
    assert rows[1]["grl_coefficient"] == pytest.approx(float(config.grl.coefficient))


# A damaged or tampered run folder: refused in one sentence that names the file and the fix,
# with every file left as it was.


def _folder_state(workdir):
    state = {}
    for folder, _, files in os.walk(workdir):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                state[os.path.relpath(os.path.join(folder, name), workdir)] = f.read()
    return state


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("damage") / "run")
    train_and_evaluate(tiny_config(epochs=2), workdir, progress=False)
    return workdir


def _truncate_metrics(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: text.index("\n") // 2])  # the first row cut in half


def _scramble_checkpoint(workdir):
    folder = os.path.join(workdir, "checkpoints", "2", "default")
    for root, _, files in os.walk(folder):
        for name in files:
            if name not in ("_METADATA", "_sharding", "manifest.ocdbt"):
                with open(os.path.join(root, name), "r+b") as f:
                    size = len(f.read())
                    f.seek(0)
                    f.write(bytes(range(256)) * (size // 256) + b"\x00" * (size % 256))


def _user_notes_in(step):
    def damage(workdir):
        folder = os.path.join(workdir, "checkpoints", step)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("my notes")

    return damage


# A failed TensorStore read leaves an asyncio callback that fires on a closed event loop when it
# is collected: orbax's noise, not this test's subject.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda w: os.remove(os.path.join(w, "metrics.jsonl")), r"metrics\.jsonl lacks epoch"),
        (_truncate_metrics, r"metrics\.jsonl, line 1: not valid JSON"),
        (lambda w: os.remove(os.path.join(w, "config.json")), "but no config.json"),
        (_user_notes_in("7"), r"checkpoints/7 is not a checkpoint jaxdann wrote"),
        # An older step than orbax keeps: its clean-up would have deleted the notes.
        (_user_notes_in("0"), r"checkpoints/0 is not a checkpoint jaxdann wrote"),
        (_scramble_checkpoint, r"the checkpoint .*checkpoints/2 cannot be read .*move that"),
        (lambda w: os.mkdir(os.path.join(w, "checkpoints", "9")), r"checkpoints/9 cannot be read"),
        (
            lambda w: open(os.path.join(w, "checkpoints", "12"), "w").close(),
            r"checkpoints/12 is not a checkpoint jaxdann wrote; move it out",
        ),
    ],
    ids=[
        "metrics_missing",
        "metrics_cut",
        "config_missing",
        "newer_foreign",
        "older_foreign",
        "checkpoint_damaged",
        "empty_newest",
        "numbered_file",
    ],
)
def test_a_damaged_run_folder_is_refused_by_name_and_left_as_it_was(
    two_epoch_run, tmp_path, damage, message
):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_epoch_run, workdir)
    damage(workdir)
    before = _folder_state(workdir)
    with pytest.raises(ValueError, match=message) as error:
        train_and_evaluate(tiny_config(epochs=3), workdir, progress=False)
    assert "\n" not in str(error.value)
    assert _folder_state(workdir) == before
    gc.collect()  # here, where the filter above applies


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_refused_sharded_resume_writes_no_shards_file(tmp_path):
    workdir = str(tmp_path / "run")
    sharded = {"data.shard_per_host": True}
    train_and_evaluate(tiny_config(epochs=2, **sharded), workdir, progress=False)
    os.remove(os.path.join(workdir, "shards.json"))  # a folder from before shards.json existed
    _scramble_checkpoint(workdir)
    before = _folder_state(workdir)
    with pytest.raises(ValueError, match="checkpoints/2 cannot be read"):
        train_and_evaluate(tiny_config(epochs=3, **sharded), workdir, progress=False)
    assert _folder_state(workdir) == before
    gc.collect()  # here, where the filter above applies


def test_a_save_cut_short_leaves_no_temporary_folder_after_the_next_start(two_epoch_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_epoch_run, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    # What a kill during orbax's save of step 5 leaves: the step's temporary folder, half written.
    stale = os.path.join(checkpoints, "5.orbax-checkpoint-tmp-1764352800000000")
    shutil.copytree(os.path.join(checkpoints, "2", "default"), os.path.join(stale, "default"))
    train_and_evaluate(tiny_config(epochs=3), workdir, progress=False)
    assert sorted(os.listdir(checkpoints)) == ["2", "3"]
    assert [row["epoch"] for row in read_rows(workdir)] == [1, 2, 3]


def pacs_config(settings, **overrides):
    """The ``tiny_pacs_overrides`` fixture's settings, and ``overrides``, as a config."""
    settings = settings | {key: str(value) for key, value in overrides.items()}
    return config_lib.apply_overrides(config_lib.base_config(), settings)


def test_a_run_resumes_from_moved_data_but_not_from_other_data(
    tmp_path, write_pacs_tree, tiny_pacs_overrides
):
    first = tmp_path / "PACS"
    write_pacs_tree(first)
    reference = str(tmp_path / "reference")
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(first, tmp_path / "cache"), epochs=2),
        reference,
        progress=False,
    )
    workdir = str(tmp_path / "run")
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(first, tmp_path / "cache"), epochs=1),
        workdir,
        progress=False,
    )
    with open(os.path.join(workdir, "data.json")) as f:
        recorded = json.load(f)["processes"]
    assert len(recorded) == 1 and recorded[0]["source"]["images"] == 12
    assert recorded[0]["validation"] is None

    # Moved (new modification times, so decoded again, not read from the cache): resumes.
    moved = tmp_path / "moved"
    shutil.copytree(first, moved, copy_function=shutil.copy)
    shutil.rmtree(first)
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(moved, tmp_path / "cache"), epochs=2),
        workdir,
        progress=False,
    )
    assert training_part(read_rows(workdir)) == training_part(read_rows(reference))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["root"] == str(moved)

    # One image of the target changed: refused, naming the split, and the folder kept as it was.
    from PIL import Image

    Image.new("RGB", (40, 44), (200, 10, 10)).save(moved / "sketch" / "cat" / "0.png")
    before = _folder_state(workdir)
    with pytest.raises(config_lib.ConfigError) as error:
        train_and_evaluate(
            pacs_config(tiny_pacs_overrides(moved, tmp_path / "cache"), epochs=3),
            workdir,
            progress=False,
        )
    assert re.fullmatch(
        rf"{re.escape(workdir)} was trained on other data than it reads now \(target: 12 images, "
        r"CRC-32 [0-9a-f]{8} then, 12 images, CRC-32 [0-9a-f]{8} now\); read the data the run "
        r"started with \(data\.root, data\.format\) or choose a new --workdir\.",
        str(error.value),
    )
    assert _folder_state(workdir) == before


def test_without_a_data_record_the_data_root_may_not_change(
    tmp_path, write_pacs_tree, tiny_pacs_overrides
):
    first, second = tmp_path / "PACS", tmp_path / "other"
    write_pacs_tree(first)
    shutil.copytree(first, second)
    workdir = str(tmp_path / "run")
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(first, tmp_path / "cache"), epochs=1),
        workdir,
        progress=False,
    )
    os.remove(os.path.join(workdir, "data.json"))  # a folder from before jaxdann recorded data
    with pytest.raises(config_lib.ConfigError, match=r"different config \(data\.root: "):
        train_and_evaluate(
            pacs_config(tiny_pacs_overrides(second, tmp_path / "cache"), epochs=2),
            workdir,
            progress=False,
        )
    # Resumed where it started, it records its data, and may move from then on.
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(first, tmp_path / "cache"), epochs=2),
        workdir,
        progress=False,
    )
    assert os.path.exists(os.path.join(workdir, "data.json"))
    train_and_evaluate(
        pacs_config(tiny_pacs_overrides(second, tmp_path / "cache"), epochs=3),
        workdir,
        progress=False,
    )
    assert [row["epoch"] for row in read_rows(workdir)] == [1, 2, 3]


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"processes": []},
        {"processes": [{}]},
        {"processes": [["source"]]},
        {"processes": [{"source": {"crc32": "00000000"}, "target": None}]},
        {"processes": [dict.fromkeys(SPLITS, {"images": 40, "crc32": "-2c29d31a"})]},
    ],
    ids=["list", "no_entries", "empty_entry", "list_entry", "partial_entry", "signed_crc"],
)
def test_a_damaged_data_record_is_refused_by_name(two_epoch_run, tmp_path, record):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_epoch_run, workdir)
    path = os.path.join(workdir, "data.json")
    with open(path, "w") as f:
        json.dump(record, f)
    before = _folder_state(workdir)
    with pytest.raises(run_folder.DamagedFile, match=rf"^{re.escape(path)} is not a data record"):
        train_and_evaluate(tiny_config(epochs=3), workdir, progress=False)
    assert _folder_state(workdir) == before


def test_the_summary_comes_last_so_a_run_stopped_before_it_finishes_its_figures(
    tmp_path, monkeypatch
):
    workdir = str(tmp_path / "run")

    def stopped(*args, **kwargs):
        raise Interrupt

    with monkeypatch.context() as patch:  # stopped while drawing the curves, after training
        patch.setattr(plots, "plot_curves", stopped)
        with pytest.raises(Interrupt):
            train_and_evaluate(tiny_config(epochs=1), workdir, progress=False)
    assert not os.path.exists(os.path.join(workdir, "summary.json"))  # so not "done" for a sweep
    summary, status = sweep.run_cell(tiny_config(epochs=1), workdir, data=None)
    assert status == "trained" and summary["epochs"] == 1
    assert os.path.exists(os.path.join(workdir, "curves.png"))


def test_each_checkpoint_is_saved_after_its_epochs_metrics_row(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    real_save, rows_at_save = ocp.CheckpointManager.save, {}

    def save(manager, step, *args, **kwargs):
        rows_at_save[step] = [row["epoch"] for row in read_rows(workdir)]
        return real_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    train_and_evaluate(tiny_config(epochs=2), workdir, progress=False)
    assert rows_at_save == {1: [1], 2: [1, 2]}


@pytest.mark.skipif(sys.platform != "linux", reason="signals are tested on Linux")
def test_ctrl_c_while_compiling_exits_130_with_the_hint(tmp_path):
    # Interrupted inside XLA's compilation, Python's own shutdown crashed (SIGSEGV) before
    # jaxdann ended such runs with os._exit (4 of 4 tries at this moment).
    workdir = str(tmp_path / "run")
    # Ctrl-C raises KeyboardInterrupt even where this test's process ignores SIGINT (a shell's
    # background job), which its children would inherit.
    start = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('jaxdann.train', run_name='__main__')"
    )
    # Without the tests' compilation cache: the step must really be compiling.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-c", start, "--workdir", workdir, "--config.epochs=50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        # config.json is written just before the first step is traced and compiled.
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(workdir, "config.json")):
            assert process.poll() is None and time.time() < deadline, "the run did not start"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, out.decode()[-2000:]
    assert f"rerunning with --workdir {workdir} starts it again" in out.decode()


def test_a_step_orbax_was_deleting_when_killed_does_not_block_resuming(two_epoch_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_epoch_run, workdir)
    old_step = os.path.join(workdir, "checkpoints", "1")  # what a kill in its rmtree may leave
    os.remove(os.path.join(old_step, "_CHECKPOINT_METADATA"))
    shutil.rmtree(os.path.join(old_step, "default"))
    train_and_evaluate(tiny_config(epochs=3), workdir, progress=False)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]
    assert [row["epoch"] for row in read_rows(workdir)] == [1, 2, 3]


def test_a_run_trained_again_has_no_summary_until_it_finishes(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=1, checkpoint_every_epochs=0)  # a rerun trains from the start
    train_and_evaluate(config, workdir, progress=False)

    def stop(step):
        raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(config, workdir, progress=False, on_step=stop)
    # The earlier run's summary would tell a sweep this half-trained run is done.
    assert not os.path.exists(os.path.join(workdir, "summary.json"))

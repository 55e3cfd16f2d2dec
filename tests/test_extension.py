"""The seams: a method, backbone or optimizer plugs in by name, and names are checked."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdann import config as config_lib
from jaxdann import train
from jaxdann.errors import ConfigError, FolderInUse
from jaxdann.methods import METHODS, Method, masked_mean
from jaxdann.models.heads import MLPHead
from jaxdann.training import optim
from jaxdann.training.run_folder import hold_folder

QUICK = ["--config.epochs=2", "--config.data.limit=96", "--config.log_every_epoch=false"]


class TargetEntropy(Method):
    """A toy method: source cross-entropy + the entropy of target predictions, with an extra
    head that only exists to show heads are built and trained."""

    label = "toy entropy"
    needs_target = True
    epoch_metrics = ("learning_rate", "class_loss", "source_accuracy", "target_entropy")

    @classmethod
    def heads(cls, config, backbone, num_classes):
        return {"toy_head": MLPHead((), 3)}

    def loss(self, params, model_state, batch, rng, progress):
        source, target, key = self.prepare(batch, rng)
        net = self.network
        features, model_state = net.embed(
            params, model_state, jnp.concatenate([source, target]), train=True, rng=key
        )
        logits, _ = net.run(params, model_state, "classifier", features, train=True, rng=key)
        extra, _ = net.run(params, model_state, "toy_head", features, train=True, rng=key)
        count = source.shape[0]
        loss, sums = self.classification(logits[:count], batch)
        probabilities = jax.nn.softmax(logits[count:])
        entropy = -jnp.sum(probabilities * jnp.log(probabilities + 1e-5), axis=-1)
        loss += 0.1 * masked_mean(entropy, batch["target_mask"]) + 0.0 * extra.sum()
        sums |= {
            "target_entropy": jnp.sum(entropy * batch["target_mask"]),
            "target_count": jnp.sum(batch["target_mask"]),
        }
        return loss, (sums, model_state)

    def summarize(self, totals, stacked):
        entropy = totals["target_entropy"] / totals["target_count"]
        return super().summarize(totals, stacked) | {"target_entropy": entropy}


class Broken(Method):
    """A method with a bug: its loss reads a batch key that does not exist."""

    def loss(self, params, model_state, batch, rng, progress):
        return batch["no_such_key"], ({}, model_state)


class TwoStage(Method):
    """Owns its update: stage 1 steps every part on the class loss, stage 2 steps the
    classifier alone again, each with its own optimizer state."""

    label = "two stage"

    def init_optimizer(self, optimizer, params):
        return {"all": optimizer.init(params), "head": optimizer.init(params["classifier"])}

    def update(self, state, batch, rng, progress, optimizer):
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (sums, model_state)), grads = grad_fn(
            state.params, state.model_state, batch, rng, progress
        )
        updates, all_state = optimizer.update(grads, state.opt_state["all"], state.params)
        params = optax.apply_updates(state.params, updates)

        def head_loss(head):
            return self.loss(params | {"classifier": head}, model_state, batch, rng, progress)[0]

        head_grads = jax.grad(head_loss)(params["classifier"])
        head_updates, head_state = optimizer.update(
            head_grads, state.opt_state["head"], params["classifier"]
        )
        params = params | {"classifier": optax.apply_updates(params["classifier"], head_updates)}
        opt_state = {"all": all_state, "head": head_state}
        state = state.replace(params=params, opt_state=opt_state, model_state=model_state)
        return state, sums | {"loss": loss}


for _name, _method in (("toy_entropy", TargetEntropy), ("toy_broken", Broken)):
    METHODS.register(_name, _method)
METHODS.register("toy_two_stage", TwoStage)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def test_a_method_registered_outside_the_library_trains_through_the_command_line(tmp_path):
    workdir = str(tmp_path / "toy")
    assert train.main(["--workdir", workdir, "--config.adaptation=toy_entropy", *QUICK]) == 0
    rows = _rows(workdir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert set(TargetEntropy.epoch_metrics) <= set(rows[0])
    assert "domain_loss_source" not in rows[0]
    assert 0 < rows[-1]["target_entropy"] < np.log(10)
    with open(os.path.join(workdir, "summary.json")) as handle:
        assert json.load(handle)["adaptation"] == "toy_entropy"


def test_a_method_may_own_a_multi_stage_update(tmp_path):
    workdir = str(tmp_path / "two")
    assert train.main(["--workdir", workdir, "--config.adaptation=toy_two_stage", *QUICK]) == 0
    assert [row["epoch"] for row in _rows(workdir)] == [1, 2]
    assert np.isfinite(_rows(workdir)[-1]["class_loss"])


def test_a_bug_inside_a_method_keeps_its_traceback(tmp_path, capsys):
    with pytest.raises(KeyError, match="no_such_key"):
        train.main(["--workdir", str(tmp_path / "bug"), "--config.adaptation=toy_broken", *QUICK])
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "key,registered",
    [
        ("adaptation", ("none", "dann", "toy_entropy")),
        ("model.arch", ("alexnet", "small_cnn")),
        ("optimizer.name", ("sgd", "adam", "rmsprop")),
        ("data.name", ("pacs", "digits")),
    ],
)
def test_a_misspelled_name_lists_the_registered_ones(key, registered, capsys):
    assert train.main([f"--config.{key}=nonesuch", "--config.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: config key {key}='nonesuch' is not a registered")
    assert all(name in err for name in registered)


def test_the_optimizer_table_refuses_an_unknown_name():
    with pytest.raises(ConfigError, match="'lamb' is not a registered optimizer.*sgd, adam"):
        optim.make_optimizer("lamb", 0.1, steps_per_epoch=1)
    assert optim.OPTIMIZERS.names() == ("sgd", "adam", "rmsprop")


def test_the_backbone_learning_rate_multiplier_scales_only_the_backbone():
    config = config_lib.base_config().optimizer
    config.weight_decay, config.momentum = 0.0, 0.0
    course = {"steps_per_epoch": 1, "total_steps": 1}
    params = {"features": jnp.ones(3), "classifier": jnp.ones(2)}
    grads = {"features": jnp.full(3, 2.0), "classifier": jnp.full(2, 2.0)}
    moved = {}
    for multiplier in (1.0, 0.1):
        config.backbone_lr_multiplier = multiplier
        optimizer = optim.optimizer_factories(config)[0](0.5, course)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        moved[multiplier] = updates
    np.testing.assert_allclose(moved[1.0]["features"], -1.0)
    np.testing.assert_allclose(moved[0.1]["features"], -0.1, rtol=1e-6)
    np.testing.assert_array_equal(moved[0.1]["classifier"], moved[1.0]["classifier"])


def test_a_bottleneck_with_batchnorm_trains_checkpoints_and_resumes_bit_for_bit(
    tmp_path, train_whole_and_resumed
):
    bottleneck = ["--config.model.bottleneck=16", "--config.data.limit=96"]
    whole, parts = train_whole_and_resumed(tmp_path, bottleneck)
    assert parts == whole
    # The running statistics are in the checkpoint, next to the parameters.
    with open(tmp_path / "parts" / "checkpoints" / "2" / "default" / "_METADATA") as handle:
        metadata = handle.read()
    assert "model_state" in metadata and "batch_stats" in metadata and "bottleneck" in metadata


def test_one_run_per_folder_and_a_killed_holder_lets_go(tmp_path):
    workdir = str(tmp_path / "run")
    first = hold_folder(workdir)
    with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
        hold_folder(workdir)
    first.close()
    hold_folder(workdir).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from jaxdann.training.run_folder import hold_folder
                hold = hold_folder({workdir!r}); print("held", flush=True); time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
        hold_folder(workdir)
    assert train.main(["--workdir", workdir, "--config.epochs=1"]) == 2
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    hold_folder(workdir).close()  # the operating system let go with the process


def test_a_checkpoint_without_model_state_resumes_bit_for_bit(tmp_path):
    """Run folders whose checkpoints predate ``TrainState.model_state`` still resume."""
    import flax.struct
    import orbax.checkpoint as ocp

    class StateWithoutModelState(flax.struct.PyTreeNode):
        step: jax.Array
        params: dict
        opt_state: object
        learning_rate: jax.Array

    constant = ["--config.grl.schedule=constant", "--config.optimizer.schedule=step"]
    common = ["--config.data.limit=96", "--config.log_every_epoch=false", *constant]
    common.append("--config.eval.validation_every_epoch=true")
    whole, old = str(tmp_path / "whole"), str(tmp_path / "old")
    assert train.main(["--workdir", whole, "--config.epochs=2", *common]) == 0
    assert train.main(["--workdir", old, "--config.epochs=1", *common]) == 0
    checkpoints = os.path.join(old, "checkpoints")
    with ocp.CheckpointManager(checkpoints) as manager:
        state = manager.restore(1)
        manager.delete(1)
    fields = {name: state[name] for name in ("step", "params", "opt_state", "learning_rate")}
    with ocp.CheckpointManager(checkpoints) as manager:
        manager.save(1, args=ocp.args.StandardSave(StateWithoutModelState(**fields)))
    assert train.main(["--workdir", old, "--config.epochs=2", *common]) == 0
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert drop(_rows(old)) == drop(_rows(whole))


def test_a_study_folder_in_use_is_refused_for_sweep_and_pairs(tmp_path, capsys):
    from jaxdann import pairs, sweep

    study = str(tmp_path / "study")
    hold = hold_folder(study)
    try:
        assert sweep.main(["--workdir", study, "--config.epochs=1"]) == 2
        assert f"{study} is in use by a running jaxdann process (pid {os.getpid()})" in (
            capsys.readouterr().err
        )
        pacs = os.path.join(os.path.dirname(__file__), "..", "configs", "pacs_dann.py")
        assert pairs.main(["--workdir", study, "--config", pacs, "--seeds", "0"]) == 2
        assert "is in use by a running jaxdann process" in capsys.readouterr().err
    finally:
        hold.close()


def test_help_into_a_closed_pipe_is_quiet():
    def run(reader):
        command = f"{sys.executable} -m jaxdann.train --help | {reader}; exit ${{PIPESTATUS[0]}}"
        return subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, check=False, timeout=120
        )

    # `true` has exited before the help is written: every write meets a closed pipe.
    for result in (run("true"), run("head -1")):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert run("head -1").stdout.startswith("python -m jaxdann.train")


def test_the_runs_of_a_study_share_compiled_functions_and_skip_per_run_files(tmp_path):
    import copy

    from jaxdann.sweep import run_cell, with_cell_checkpoints
    from jaxdann.training import feed, trainer
    from jaxdann.training.trainer import Study

    config = config_lib.demo_config()
    config.epochs, config.log_every_epoch, config.data.limit = 1, False, 96
    data = feed.load_shard(config, (0, 1))
    study = Study()
    summaries = []
    for index, (adaptation, learning_rate) in enumerate((("dann", 0.01), ("dann", 0.02))):
        cell = copy.deepcopy(config)
        cell.adaptation, cell.optimizer.learning_rate = adaptation, learning_rate
        cell = with_cell_checkpoints(cell, "auto")
        folder = str(tmp_path / f"cell{index}")
        summaries.append(run_cell(cell, folder, data, study=study)[0])
        assert not os.path.exists(os.path.join(folder, "curves.png"))
        assert not os.listdir(os.path.join(folder, "checkpoints"))
    # One train step, one epoch summary, one evaluation for both learning rates.
    assert len(study.compiled) == 3
    # Sharing changes nothing: the second cell on its own gives the same numbers.
    alone = copy.deepcopy(config)
    alone.optimizer.learning_rate = 0.02
    solo = trainer.train_and_evaluate(alone, str(tmp_path / "alone"), data=data, progress=False)
    keys = ("final_target_accuracy", "final_source_accuracy", "validation_accuracy")
    assert [solo[k] for k in keys] == [summaries[1][k] for k in keys]
    assert os.path.exists(tmp_path / "alone" / "curves.png")
    long = config_lib.demo_config()
    long.epochs = 6
    assert with_cell_checkpoints(long, "auto").checkpoint_every_epochs == 1
    assert with_cell_checkpoints(long, "no").checkpoint_every_epochs == 0


def test_more_devices_than_there_are_is_a_setting_refused(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    assert train.main(["--workdir", workdir, "--config.parallel.num_devices=64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config key parallel.num_devices=64" in err[0]
    assert not os.path.exists(workdir)

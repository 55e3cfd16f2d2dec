"""``train_and_evaluate(config, workdir)``: one loop for source-only and DANN, resumable.

Data flows one way: host arrays -> device-resident uint8 pools -> index batches gathered on the
device -> the jitted step -> per-epoch metrics (fetched once) -> ``metrics.jsonl`` and orbax
checkpoints in the run folder -> plots drawn from those files.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from jaxdann import config as config_lib
from jaxdann import feed as feeds
from jaxdann import input_pipeline, parallel, plots, run_folder
from jaxdann.models import DANN, build_model
from jaxdann.optim import (
    annealed_learning_rate_schedule,
    learning_rate_schedule,
    make_optimizer,
)
from jaxdann.step import (
    EPOCH_METRICS,
    TrainState,
    make_course,
    make_eval_step,
    make_train_step,
    summarize_epoch,
)

__all__ = [
    "TrainingDiverged",
    "train_and_evaluate",
    "read_pretrained",
    "initial_params",
    "build_from_config",
]


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stopped, its last good checkpoint is kept."""


def build_from_config(config, num_classes: int):
    """The model and (optimizer, schedule factory) a config describes."""
    domain_hidden = None
    if config.model.domain_hidden != "classifier":
        try:
            domain_hidden = [int(w) for w in str(config.model.domain_hidden).split(",") if w]
        except ValueError:
            raise config_lib.ConfigError(
                f"config key model.domain_hidden={config.model.domain_hidden!r}: use 'classifier' "
                "or comma-separated widths such as '1024,1024'."
            ) from None
    return build_model(
        config.model.arch,
        num_classes,
        adversarial=config.adaptation == "dann",
        domain_hidden=domain_hidden,
        dropout_rate=config.model.dropout_rate,
        dtype=jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32,
        stem=config.model.stem,
        pool_gradient=config.model.pool_gradient,
    )


def _shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def read_pretrained(config) -> dict | None:
    """The converted weights ``model.pretrained`` names (``None`` for random init).

    Read before any data, so a missing or unreadable file is one sentence, not a wait.
    """
    pretrained = str(config.model.pretrained)
    if pretrained.lower() in ("", "none"):
        return None
    from jaxdann.convert import ConversionError, load_params

    loaded = load_params(pretrained)
    for part in ("features", "classifier"):
        if part not in loaded:
            raise ConversionError(f"{pretrained} has no {part!r} parameters.")
    return loaded


@functools.partial(jax.jit, static_argnums=(0, 1))
def _random_params(model: DANN, image_shape: tuple[int, int, int], rng: jax.Array) -> Any:
    """Flax init, compiled once per process for each model and image size (Flax modules are
    hashable): the runs of a sweep or of ``jaxdann.pairs`` reuse it instead of compiling again."""
    sample = jnp.zeros((1, *image_shape), jnp.float32)
    return model.init({"params": rng}, sample, method=DANN.initialize_all)


def initial_params(
    model: DANN,
    config,
    image_shape: tuple[int, int, int],
    rng: jax.Array,
    pretrained: dict | None = None,
) -> Any:
    """Random init, then the ``pretrained`` weights (if any), then the domain-classifier copy.

    ``pretrained`` (from :func:`read_pretrained`) provides the feature extractor and the
    classifier's hidden layers; its output layer is used only if its class count matches (else
    it stays freshly initialised, as the seed replaces AlexNet's 1000-way layer). With
    ``model.domain_init_from_classifier`` the domain classifier's hidden layers start as copies
    of the classifier's (the seed does this).
    """
    params = dict(_random_params(model, tuple(image_shape), rng)["params"])
    if pretrained is not None:
        from jaxdann.convert import ConversionError

        loaded = pretrained
        new_classifier = dict(params["classifier"])
        for layer, value in loaded["classifier"].items():
            if layer == "output" and _shapes(value) != _shapes(new_classifier.get(layer)):
                continue  # a different class count: keep the fresh output layer
            new_classifier[layer] = value
        merged = {"features": loaded["features"], "classifier": new_classifier}
        for part, value in merged.items():
            if _shapes(value) != _shapes(params[part]):
                raise ConversionError(
                    f"{config.model.pretrained}: {part} shapes {_shapes(value)} do not fit "
                    f"model.arch={config.model.arch} ({_shapes(params[part])})."
                )
            params[part] = value
    if "domain_classifier" in params and config.model.domain_init_from_classifier:
        domain = dict(params["domain_classifier"])
        for layer, value in params["classifier"].items():
            if layer != "output":
                if _shapes(value) != _shapes(domain.get(layer)):
                    raise config_lib.ConfigError(
                        "model.domain_init_from_classifier=true needs the domain classifier's "
                        "hidden layers to match the classifier's; set model.domain_hidden="
                        "classifier or model.domain_init_from_classifier=false."
                    )
                # Copies, not views: the train step donates its state, leaf by leaf.
                domain[layer] = jax.tree.map(jnp.array, value)
        params["domain_classifier"] = domain
    return jax.tree.map(jnp.asarray, params)


def _write_config(config, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        run_folder.write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(config))


def _read_metrics(path: str, up_to_epoch: int) -> list[dict]:
    if not os.path.exists(path):
        return []
    return [row for row in run_folder.read_metrics(path) if row["epoch"] <= up_to_epoch]


def _to_python(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


def _optimizer_factories(opt) -> tuple[Callable, Callable]:
    """``optimizer_for(learning_rate, course)`` and ``schedule_for(learning_rate, course)``.

    Factories, not an optimizer: the train step builds its optimizer from the traced learning
    rate and course, so runs that differ only in those share one compiled step.
    """

    def schedule_for(learning_rate, course):
        if opt.schedule == "annealed":
            return annealed_learning_rate_schedule(learning_rate, total_steps=course["total_steps"])
        return learning_rate_schedule(
            learning_rate,
            step_size=opt.step_size,
            gamma=opt.gamma,
            steps_per_epoch=course["steps_per_epoch"],
        )

    def optimizer_for(learning_rate, course):
        return make_optimizer(
            opt.name,
            learning_rate,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            schedule=schedule_for(learning_rate, course),
            clip_norm=float(opt.clip_norm),
            steps_per_epoch=course["steps_per_epoch"],
        )

    return optimizer_for, schedule_for


def _check_finite(losses: np.ndarray, epoch: int, steps_per_epoch: int, manager) -> None:
    """Stops a run whose epoch had a non-finite loss; its newest saved checkpoint stays."""
    if np.all(np.isfinite(losses)):
        return
    bad_step = epoch * steps_per_epoch + int(np.argmin(np.isfinite(losses)))
    manager.wait_until_finished()
    kept = manager.latest_step()
    where = f"the checkpoint after epoch {kept} in {manager.directory} is kept; " if kept else ""
    raise TrainingDiverged(
        f"non-finite loss at step {bad_step} (epoch {epoch + 1}); {where}"
        "lower optimizer.learning_rate or check the data."
    )


def train_and_evaluate(
    config,
    workdir: str,
    *,
    data: input_pipeline.ExperimentData | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Trains (or resumes) the run in ``workdir`` and returns its summary.

    ``data``: already loaded arrays for this config (a sweep passes them to every run).

    ``on_step(global_step)`` is called after each step is dispatched (tests use it to interrupt
    a run in the middle of an epoch).
    """
    config_lib.validate(config)
    started = time.time()
    parallel.maybe_initialize_distributed(config.parallel.distributed)
    mesh = parallel.make_mesh(config.parallel.num_devices)
    is_main = jax.process_index() == 0
    pretrained = read_pretrained(config)
    shard = (jax.process_index(), jax.process_count()) if config.data.shard_per_host else (0, 1)
    if data is not None and shard[1] > 1:
        raise ValueError(
            "data.shard_per_host with several processes needs train_and_evaluate to load the "
            "data itself (pass no data=)."
        )
    run_folder.check_workdir(config, workdir)
    if config.data.shard_per_host:
        feeds.check_process_count(workdir, resuming=bool(run_folder.saved_epochs(workdir)))

    if data is None:
        data = feeds.load_shard(config, shard)
    # A resumed run must read what it trained on, wherever it reads it from now.
    fingerprints = feeds.data_fingerprints(data, sharded=bool(config.data.shard_per_host))
    run_folder.check_data(workdir, fingerprints)
    model = build_from_config(config, len(data.class_names))
    feed = feeds.make_feed(data, config, mesh, make_eval_step(model, mean=data.mean, std=data.std))
    batch_size, epochs = int(config.batch_size), int(config.epochs)
    steps_per_epoch = input_pipeline.steps_per_epoch(
        feed.source_count, batch_size, config.data.drop_last
    )
    total_steps = steps_per_epoch * epochs
    # The run's length is an argument of the compiled step, not a constant in it: runs that
    # differ only in data size (the source domains of jaxdann.pairs) share one executable.
    course = make_course(
        steps_per_epoch, total_steps, int(config.grl.warmup_epochs) * steps_per_epoch
    )
    optimizer_for, schedule_for = _optimizer_factories(config.optimizer)

    replicated = parallel.replicated(mesh)
    root_key = jax.random.PRNGKey(config.seed)
    params = initial_params(model, config, data.source.images.shape[1:], root_key, pretrained)
    learning_rate = jnp.asarray(config.optimizer.learning_rate, jnp.float32)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer_for(learning_rate, course).init(params),
        learning_rate=learning_rate,
    )
    state = jax.device_put(state, replicated)
    course = jax.device_put(course, replicated)

    checkpoint_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
    manager = ocp.CheckpointManager(
        checkpoint_dir,
        # cleanup_tmp_directories: a save cut short by a kill left a step's temporary folder.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=2, create=True, cleanup_tmp_directories=True
        ),
    )
    # However this block ends (done, an error, Ctrl-C), the manager is closed, which waits for an
    # in-flight save and for orbax's deletion of an old step: both end whole.
    try:
        start_epoch = manager.latest_step() or 0
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        history = _read_metrics(metrics_path, start_epoch)
        if start_epoch:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            try:
                state = manager.restore(start_epoch, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # orbax and TensorStore raise many kinds
                folder = os.path.join(checkpoint_dir, str(start_epoch))
                raise run_folder.DamagedFile(
                    f"the checkpoint {folder} cannot be read ({type(error).__name__}); move that "
                    f"folder out of {checkpoint_dir} to resume from the checkpoint before it, or "
                    "choose a new --workdir."
                ) from error
            if is_main:
                print(f"resuming {workdir} from the checkpoint after epoch {start_epoch}")
        # Only now: a run that cannot start (its data, its checkpoint) leaves its folder as it was.
        _write_config(config, workdir)
        if is_main:
            run_folder.write_data(workdir, fingerprints)
        if config.data.shard_per_host:
            feeds.record_process_count(workdir)
        summary_path = os.path.join(workdir, "summary.json")
        if is_main and start_epoch < epochs and os.path.exists(summary_path):
            os.remove(summary_path)  # trained again: not finished until its new summary

        step_fn = make_train_step(
            model,
            optimizer_for,
            schedule_for,
            config,
            mean=data.mean,
            std=data.std,
        )
        options = parallel.compiler_options()
        train_step = jax.jit(step_fn, donate_argnums=0, compiler_options=options)

        summarize = jax.jit(summarize_epoch)

        target_predictions = None  # the last epoch's, reused by the final evaluation
        for epoch in range(start_epoch, epochs):
            epoch_started = time.time()
            step_metrics = []
            bar = tqdm(
                feed.batches(epoch, steps_per_epoch),
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{epochs}",
                leave=False,
                # Bars only on a terminal: logs and CI get the one line per epoch instead.
                disable=not (progress and is_main and sys.stderr.isatty()),
            )
            for index, batch in enumerate(bar):
                state, metrics = train_step(state, batch, root_key, course)
                step_metrics.append(metrics)
                if on_step is not None:
                    on_step(epoch * steps_per_epoch + index)
            summary = jax.device_get(summarize(step_metrics))
            _check_finite(np.asarray(summary.pop("losses")), epoch, steps_per_epoch, manager)
            row = {"epoch": epoch + 1}
            row |= {
                key: _to_python(summary[key]) if key in summary else None for key in EPOCH_METRICS
            }
            row["target_accuracy"], *target_predictions = feed.evaluate(state.params, "target")
            last_epoch = epoch + 1 == epochs
            if data.validation is not None and (config.eval.validation_every_epoch or last_epoch):
                row["validation_accuracy"], _, _ = feed.evaluate(state.params, "validation")
            row["epoch_time_s"] = round(time.time() - epoch_started, 3)
            history.append(row)
            if is_main:  # the row first: a checkpoint never stands without its epoch's row
                run_folder.write_metrics(metrics_path, history)
                if config.log_every_epoch:
                    tqdm.write(_format_row(row, epochs))
            every = int(config.checkpoint_every_epochs)  # 0: never (short studies, no resuming)
            if every > 0 and ((epoch + 1) % every == 0 or last_epoch):
                manager.save(epoch + 1, args=ocp.args.StandardSave(state))
    finally:
        manager.close()

    if target_predictions is None:  # nothing was trained in this process (a finished run)
        _, *target_predictions = feed.evaluate(state.params, "target")
    labels, predictions = target_predictions
    return _finish(config, workdir, history, labels, predictions, data, feed, mesh, started)


def _format_row(row: dict, epochs: int) -> str:
    text = (
        f"epoch {row['epoch']:>3}/{epochs}  lr {row['learning_rate']:.2e}  "
        f"class loss {row['class_loss']:.4f} acc {row['source_accuracy']:.4f}"
    )
    if row.get("domain_loss_source") is not None:
        text += (
            f"  domain loss src {row['domain_loss_source']:.4f} tgt {row['domain_loss_target']:.4f}"
            f" acc src {row['domain_accuracy_source']:.3f} tgt {row['domain_accuracy_target']:.3f}"
            f"  grl {row['grl_coefficient']:.3f}"
        )
    text += f"  target acc {row['target_accuracy']:.4f}"
    if row.get("validation_accuracy") is not None:
        text += f"  val acc {row['validation_accuracy']:.4f}"
    return text + f"  ({row['epoch_time_s']:.1f}s)"


def _data_root(config) -> str | None:
    """The PACS folder a run read (an empty ``data.root`` resolved), for the record."""
    if config.data.name != "pacs" or config.data.format != "folder":
        return None
    from jaxdann.data import default_root

    return os.path.abspath(config.data.root or default_root())


def _finish(config, workdir, history, labels, predictions, data, feed, mesh, started) -> dict:
    """Per-class accuracy, the confusion matrix, summary.json and the figures."""
    if not history:
        raise ValueError(f"{workdir}: no epoch was trained (config epochs={config.epochs}).")
    num_classes = len(data.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {
        name: float(confusion[i, i] / max(confusion[i].sum(), 1))
        for i, name in enumerate(data.class_names)
    }
    best = max(history, key=lambda row: row["target_accuracy"])
    final = history[-1]
    summary = {
        "final_target_accuracy": final["target_accuracy"],
        "best_target_accuracy": best["target_accuracy"],
        "best_target_epoch": best["epoch"],
        "final_source_accuracy": final["source_accuracy"],
        "best_source_accuracy": max(row["source_accuracy"] for row in history),
        "validation_accuracy": final.get("validation_accuracy"),
        "epochs": final["epoch"],
        "adaptation": config.adaptation,
        "num_devices": mesh.size,
        "num_processes": jax.process_count(),
        "data_sharded_per_host": bool(config.data.shard_per_host),
        "rows_per_process": feed.rows_per_process,
        "platform": jax.devices()[0].platform,
        "data_root": _data_root(config),
        "train_time_s": round(sum(row["epoch_time_s"] for row in history), 2),
        "wall_time_s": round(time.time() - started, 2),
    }
    if jax.process_index() == 0:
        evaluation = {
            "target_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
            "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist(),
            "class_names": list(data.class_names),
        }
        run_folder.write_json(os.path.join(workdir, "evaluation.json"), evaluation)
        plots.plot_confusion(confusion, data.class_names, os.path.join(workdir, "confusion.png"))
        title = f"{config.data.source} -> {config.data.target}, adaptation={config.adaptation}"
        plots.plot_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"), title
        )
        # Last: a summary marks a finished run (a sweep skips such a cell), so everything else
        # a finished run holds is there before it.
        run_folder.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary

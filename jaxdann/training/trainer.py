"""``train_and_evaluate(config, workdir)``: the story of a run, for every method; resumable.

Data flows one way: host arrays -> device-resident uint8 pools (or per-host shards) -> batches
-> the jitted step (the method's update) -> per-epoch metrics (fetched once) -> the run folder
(``metrics.jsonl``, orbax checkpoints, ``summary.json``) -> figures drawn from those files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxdann import config as config_lib
from jaxdann import plots, validators
from jaxdann.data import pipeline as input_pipeline
from jaxdann.errors import TrainingDiverged
from jaxdann.methods import Method
from jaxdann.training import feed as feeds
from jaxdann.training import parallel
from jaxdann.training.model_setup import build_from_config, initial_variables, read_pretrained
from jaxdann.training.optim import optimizer_factories
from jaxdann.training.run_folder import RunFolder, saved_epochs, write_metrics
from jaxdann.training.step import (
    TrainState,
    make_course,
    make_eval_step,
    make_train_step,
    summarize_epoch,
)
from jaxdann.training.tensorboard import EventLog

__all__ = ["Study", "train_and_evaluate"]

# Steps dispatched but not finished at most: each holds its batch, so when the device is slower
# than the input (a streamed run decodes on the host) batches would otherwise pile up in memory.
_IN_FLIGHT = 2

# Config keys the compiled train step does not read (they are traced arguments, or concern the
# data, the folder or the printout): runs that differ only in them share one compiled step.
_NOT_COMPILED = frozenset(
    {
        "seed",
        "epochs",
        "optimizer.learning_rate",
        "checkpoint_every_epochs",
        "log_every_epoch",
        "eval_batch_size",
        "eval.validation_every_epoch",
        "data.source",
        "data.target",
        "data.validation",
        "data.root",
        "data.limit",
        "data.cache_dir",
        "data.on_bad",
    }
)


@dataclasses.dataclass
class Study:
    """What the runs of one study (a sweep, the pairs table) share.

    ``compiled`` holds the jitted train, summary and evaluation functions by what they compute,
    so a run that differs from an earlier one only in learning rate, seed, length or domains
    reuses them instead of tracing and compiling again; ``figures``: whether each run draws its
    own curves.png and confusion.png (a study draws its own figures once).
    """

    figures: bool = False
    compiled: dict = dataclasses.field(default_factory=dict)

    def shared(self, key, build: Callable):
        if key not in self.compiled:
            self.compiled[key] = build()
        return self.compiled[key]


def _compiled_key(config, network, data) -> tuple:
    flat = config_lib.flatten(config_lib.to_dict(config))
    settings = tuple(sorted((k, str(v)) for k, v in flat.items() if k not in _NOT_COMPILED))
    return (network, settings, tuple(np.ravel(data.mean)), tuple(np.ravel(data.std)))


@dataclasses.dataclass
class _Run:
    """What a run is built from: its devices, data, method, feed and length; and the seconds
    this process has spent on the validators (kept out of the epochs' times)."""

    config: Any
    mesh: Any
    data: input_pipeline.ExperimentData
    method: Method
    feed: Any
    steps_per_epoch: int
    course: dict
    optimizer_for: Callable
    schedule_for: Callable
    fingerprints: list[dict]
    study: Study
    compiled_key: tuple
    validators_time_s: float = 0.0

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0


def train_and_evaluate(
    config,
    workdir: str,
    *,
    data: input_pipeline.ExperimentData | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    study: Study | None = None,
) -> dict:
    """Trains (or resumes) the run in ``workdir`` and returns its summary.

    ``data``: already loaded arrays for this config (a sweep passes them to every run).
    ``study``: what the runs of a study share (compiled functions; whether to draw figures).
    ``on_step(global_step)`` is called after each step is dispatched (tests use it to interrupt
    a run in the middle of an epoch).
    """
    config_lib.validate(config)
    started = time.time()
    parallel.maybe_initialize_distributed(config.parallel.distributed)
    # Read before any data, so a missing or unreadable file is one sentence, not a wait. A run
    # that resumes takes every parameter from its checkpoint and needs no weights file.
    resuming = bool(saved_epochs(workdir))
    pretrained = None if resuming else read_pretrained(config)
    folder = RunFolder(workdir, config, is_main=jax.process_index() == 0)
    folder.hold()
    events = run = None
    try:
        run = _prepare(config, workdir, data, folder, study or Study(figures=True))
        state = _initial_state(run, pretrained)
        state, start_epoch, history = folder.restore(state)
        if resuming and not start_epoch:  # never train from random init in place of the weights
            raise RuntimeError(f"{workdir} lists checkpoints that orbax does not restore")
        if config.data.streaming and start_epoch:
            run.feed.resume(folder.data_state(start_epoch))
        # Only now: a run that cannot start (its data, its checkpoint) leaves its folder as it was.
        epochs = int(config.epochs)
        config_dict = config_lib.to_dict(config)
        folder.write_record(
            config_dict, run.fingerprints, retrain=start_epoch < epochs, data=run.data
        )
        if run.is_main and progress:
            print(f"run folder: {os.path.abspath(workdir)}")
        if config.data.shard_per_host:
            feeds.record_process_count(workdir)
        events = EventLog(workdir, history, enabled=run.is_main)
        state, predictions = _train(
            run, folder, events, state, start_epoch, history, progress, on_step
        )
        folder.close_checkpoints()  # in-flight saves end before the summary marks the run done
        variables = (state.params, state.model_state)
        if predictions is None:  # nothing was trained in this process (a finished run)
            _, *predictions = run.feed.evaluate(variables, "target")
        if history and "validators" not in history[-1]:  # a run finished by an older jaxdann
            _add_validators(run, folder, events, variables, history)
        return _finish(run, folder, events, history, *predictions, started)
    finally:
        try:
            if events is not None:
                events.close()
            if run is not None:
                run.feed.close()  # a streamed run's decoding processes end with it
        finally:
            folder.close()  # saves awaited and the folder let go, whatever the event log did


def _add_validators(run: _Run, folder: RunFolder, events: EventLog, variables, history) -> None:
    """Scores the last row of a run whose metrics.jsonl has no validators and writes them
    there (and into the event file), as a run that trains its last epoch does."""
    row = history[-1]
    row["validators"] = _validators(run, variables, row)
    if run.is_main:
        write_metrics(folder.metrics_path, history)
    events.write_epoch({"epoch": row["epoch"], "validators": row["validators"]})


def _prepare(config, workdir: str, data, folder: RunFolder, study: Study) -> _Run:
    """Checks the folder, loads the data, builds the method, its feed and the run's length."""
    mesh = parallel.make_mesh(config.parallel.num_devices)
    shard = (jax.process_index(), jax.process_count()) if config.data.shard_per_host else (0, 1)
    if data is not None and shard[1] > 1:
        raise ValueError(
            "data.shard_per_host with several processes needs train_and_evaluate to load the "
            "data itself (pass no data=)."
        )
    folder.check_settings()
    if config.data.shard_per_host:
        feeds.check_process_count(workdir, resuming=bool(saved_epochs(workdir)))
    if data is None:
        data = feeds.load_shard(config, shard)
    # A resumed run must read what it trained on, wherever it reads it from now.
    fingerprints = feeds.data_fingerprints(data, sharded=bool(config.data.shard_per_host))
    folder.check_data(fingerprints)
    network, method = build_from_config(config, len(data.class_names), mean=data.mean, std=data.std)
    key = _compiled_key(config, network, data)
    gather = feeds.gathers(config)

    def evaluator():
        eval_step = make_eval_step(network, mean=data.mean, std=data.std)
        return feeds.make_evaluator(eval_step, mesh, gather=gather)

    evaluate = study.shared(("evaluate", gather, mesh, *key), evaluator)
    feed = feeds.make_feed(data, config, mesh, evaluate)
    steps = input_pipeline.steps_per_epoch(
        feed.source_count, int(config.batch_size), config.data.drop_last
    )
    # The run's length is an argument of the compiled step, not a constant in it: runs that
    # differ only in data size (the source domains of jaxdann.pairs) share one executable.
    course = make_course(steps, steps * int(config.epochs), int(config.grl.warmup_epochs) * steps)
    optimizer_for, schedule_for = optimizer_factories(config.optimizer)
    return _Run(
        config,
        mesh,
        data,
        method,
        feed,
        steps,
        course,
        optimizer_for,
        schedule_for,
        fingerprints,
        study,
        key,
    )


def _initial_state(run: _Run, pretrained: dict | None) -> TrainState:
    """The state a new run starts from, replicated over the mesh."""
    config, method = run.config, run.method
    image_shape = run.data.image_shape
    root_key = jax.random.PRNGKey(config.seed)
    params, model_state = initial_variables(
        method.network, method, image_shape, root_key, pretrained
    )
    learning_rate = jnp.asarray(config.optimizer.learning_rate, jnp.float32)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=method.init_optimizer(run.optimizer_for(learning_rate, run.course), params),
        learning_rate=learning_rate,
        model_state=model_state,
    )
    replicated = parallel.replicated(run.mesh)
    run.course = jax.device_put(run.course, replicated)
    return jax.device_put(state, replicated)


def _train(
    run: _Run, folder: RunFolder, events: EventLog, state, start_epoch, history, progress, on_step
):
    """The epochs from ``start_epoch`` on: train, evaluate, score, commit. Returns the state and
    the last epoch's target (labels, predictions), or ``None`` if nothing was left to train."""
    config, method = run.config, run.method
    train_step, summarize = _compiled_steps(run)
    root_key = jax.random.PRNGKey(config.seed)
    epochs, every = int(config.epochs), int(config.checkpoint_every_epochs)
    predictions = None
    for epoch in range(start_epoch, epochs):
        epoch_started = time.time()
        step_metrics = []
        for index, batch in enumerate(_bar(run, epoch, progress)):
            state, metrics = train_step(state, batch, root_key, run.course)
            step_metrics.append(metrics)
            if len(step_metrics) > _IN_FLIGHT:
                jax.block_until_ready(step_metrics[-1 - _IN_FLIGHT])
            if on_step is not None:
                on_step(epoch * run.steps_per_epoch + index)
        summary = jax.device_get(summarize(step_metrics))
        losses = np.asarray(summary.pop("losses"))
        finite_state = bool(_all_finite((state.params, state.model_state)))
        _check_finite(losses, finite_state, epoch, run.steps_per_epoch, folder)
        row = {"epoch": epoch + 1} | {key: _to_python(summary[key]) for key in method.epoch_metrics}
        variables = (state.params, state.model_state)
        row["target_accuracy"], *predictions = run.feed.evaluate(variables, "target")
        last_epoch = epoch + 1 == epochs
        if config.eval.validation_every_epoch or last_epoch:
            if run.data.validation is not None:
                row["validation_accuracy"], _, _ = run.feed.evaluate(variables, "validation")
            validators_before = run.validators_time_s
            row["validators"] = _validators(run, variables, row)
            epoch_started += run.validators_time_s - validators_before  # not training time
        row["epoch_time_s"] = round(time.time() - epoch_started, 3)
        history.append(row)
        save = every > 0 and ((epoch + 1) % every == 0 or last_epoch)  # 0: never
        data_state = run.feed.state() if config.data.streaming else None
        folder.commit_epoch(history, state, save=save, data_state=data_state)
        events.write_epoch(row)
        if run.is_main and config.log_every_epoch:
            tqdm.write(_format_row(method, row, epochs))
    return state, predictions


def _validators(run: _Run, variables, row: dict) -> dict[str, float | None]:
    """The scores that choose a model without target labels (:mod:`jaxdann.validators`), from
    the model's outputs on the target-train images (never their labels) and, for DEV, on the
    source-train images and a source hold-out; the validation accuracy under the name of what
    it holds out. Each is larger for a better model, except ``dev`` (a risk). The time taken is
    added to ``run.validators_time_s``."""
    started = time.time()
    kind = _validation_kind(run.config)
    # Features (the large part) only for DEV, which needs a source hold-out.
    target = run.feed.embed(variables, "target_train", features=kind == "source_holdout")
    probabilities = validators.softmax(target["logits"])
    scores = {
        "im": validators.information_maximization(probabilities),
        "entropy": validators.entropy(probabilities),
        "snd": validators.soft_neighborhood_density(probabilities),
    }
    if kind == "source_holdout":
        holdout, source = (
            run.feed.embed(variables, "validation"),
            run.feed.embed(variables, "source"),
        )
        scores["dev"] = validators.deep_embedded_validation(
            source["features"],
            target["features"],
            holdout["features"],
            holdout["logits"],
            holdout["labels"],
            seed=int(run.config.seed),
        )
    if kind is not None and row.get("validation_accuracy") is not None:
        scores[f"{kind}_accuracy"] = row["validation_accuracy"]
    run.validators_time_s += time.time() - started
    return {name: value if np.isfinite(value) else None for name, value in scores.items()}


def _validation_kind(config) -> str | None:
    """What the validation data holds out: ``source_holdout`` (source-domain images the run does
    not train on), ``held_out_domain`` (domains that are neither source nor target), or
    ``None`` (no validation data, or a mixture)."""
    from jaxdann.data import DATASETS

    plan = DATASETS.get(config.data.name).plan(config.data)
    # A plan's source is one (domain, split) part or, with several source domains, a tuple.
    sources = plan.source if isinstance(plan.source[0], tuple) else (plan.source,)
    source_domains = {domain for domain, _ in sources}
    parts = plan.validation
    if not parts or any(part in sources for part in parts):
        return None
    if all(domain in source_domains for domain, _ in parts):
        return "source_holdout"
    if all(domain not in (*source_domains, plan.target[0]) for domain, _ in parts):
        return "held_out_domain"
    return None


def _compiled_steps(run: _Run) -> tuple[Callable, Callable]:
    """The jitted train step and epoch summary: built once per study for what they compute."""
    method = run.method

    def train_step():
        step_fn = make_train_step(method, run.optimizer_for, run.schedule_for)
        options = parallel.compiler_options()
        return jax.jit(step_fn, donate_argnums=0, compiler_options=options)

    def summarize():
        return jax.jit(lambda metrics: summarize_epoch(method, metrics))

    return (
        run.study.shared(("train_step", run.mesh, *run.compiled_key), train_step),
        run.study.shared(("summarize", *run.compiled_key), summarize),
    )


def _bar(run: _Run, epoch: int, progress: bool):
    epochs = int(run.config.epochs)
    return tqdm(
        run.feed.batches(epoch, run.steps_per_epoch),
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{epochs}",
        leave=False,
        # Bars only on a terminal: logs and CI get the one line per epoch instead.
        disable=not (progress and run.is_main and sys.stderr.isatty()),
    )


def _to_python(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


@jax.jit
def _all_finite(tree) -> jax.Array:
    """Whether every number in ``tree`` is finite: one reduction per leaf, on the devices."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _check_finite(
    losses: np.ndarray, finite_state: bool, epoch: int, steps_per_epoch: int, folder
) -> None:
    """Stops a run whose epoch had a non-finite loss, or whose last update left non-finite
    parameters or statistics (a loss is computed before its update); the epoch is neither
    scored nor saved, and the newest saved checkpoint stays."""
    finite = np.isfinite(losses)
    if finite.all() and finite_state:
        return
    if finite.all():
        what = f"non-finite parameters after step {(epoch + 1) * steps_per_epoch - 1}"
    else:
        what = f"non-finite loss at step {epoch * steps_per_epoch + int(np.argmin(finite))}"
    kept = folder.wait()
    where = f"the checkpoint after epoch {kept} in {folder.checkpoint_dir} is kept; "
    where = where if kept else ""
    raise TrainingDiverged(
        f"{what} (epoch {epoch + 1}); {where}lower optimizer.learning_rate or check the data."
    )


def _format_row(method: Method, row: dict, epochs: int) -> str:
    text = f"epoch {row['epoch']:>3}/{epochs}  lr {row['learning_rate']:.2e}  "
    text += method.describe(row) + f"  target acc {row['target_accuracy']:.4f}"
    if row.get("validation_accuracy") is not None:
        text += f"  val acc {row['validation_accuracy']:.4f}"
    return text + f"  ({row['epoch_time_s']:.1f}s)"


def _data_root(config) -> str | None:
    """The folder a run read its images from (an empty ``data.root`` resolved), for the
    record; ``None`` for data that is not read from a folder."""
    from jaxdann.data import DATASETS, ImageFolder

    dataset = DATASETS.get(config.data.name)
    if not isinstance(dataset, ImageFolder) or config.data.format != "folder":
        return None
    return os.path.abspath(dataset.root(config.data))


def _finish(
    run: _Run, folder: RunFolder, events: EventLog, history, labels, predictions, started
) -> dict:
    """Per-class accuracy, the confusion matrix, the figures (also into the event file), then
    summary.json."""
    config, data = run.config, run.data
    if not history:
        raise ValueError(f"{folder.workdir}: no epoch was trained (epochs={config.epochs}).")
    confusion = np.zeros((len(data.class_names),) * 2, np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    best = max(history, key=lambda row: row["target_accuracy"])
    final = history[-1]
    summary = {
        "final_target_accuracy": final["target_accuracy"],
        "best_target_accuracy": best["target_accuracy"],
        "best_target_epoch": best["epoch"],
        "final_source_accuracy": final["source_accuracy"],
        "best_source_accuracy": max(row["source_accuracy"] for row in history),
        "validation_accuracy": final.get("validation_accuracy"),
        "validators": final.get("validators"),
        "epochs": final["epoch"],
        "adaptation": config.adaptation,
        "num_devices": run.mesh.size,
        "num_processes": jax.process_count(),
        "data_sharded_per_host": bool(config.data.shard_per_host),
        "rows_per_process": run.feed.rows_per_process,
        "platform": jax.devices()[0].platform,
        "data_root": _data_root(config),
        "train_time_s": round(sum(row["epoch_time_s"] for row in history), 2),
        "validators_time_s": round(run.validators_time_s, 2),  # this process's, not in train
        "wall_time_s": round(time.time() - started, 2),
    }
    evaluation = {
        "target_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "per_class_accuracy": {
            name: float(confusion[i, i] / max(confusion[i].sum(), 1))
            for i, name in enumerate(data.class_names)
        },
        "confusion_matrix": confusion.tolist(),
        "class_names": list(data.class_names),
    }
    if run.is_main and run.study.figures:
        workdir = folder.workdir
        plots.plot_confusion(confusion, data.class_names, os.path.join(workdir, "confusion.png"))
        label = type(run.method).label
        title = f"{config.data.source} -> {config.data.target}, {label}"
        curves = os.path.join(workdir, "curves.png")
        plots.plot_curves(
            folder.metrics_path, curves, title, metrics=type(run.method).epoch_metrics
        )
        figures = {
            "figures/curves": curves,
            "figures/confusion": os.path.join(workdir, "confusion.png"),
        }
        events.write_figures(figures, final["epoch"])
    folder.finish(evaluation, summary)
    return summary

"""The grid sweep, the report and the all-pairs table on tiny data."""

import csv
import json
import os
import sys
import types

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from jaxdann import config as config_lib
from jaxdann import pairs, plots, report, sweep
from jaxdann.data import pipeline as input_pipeline
from jaxdann.data.pacs import DOMAINS
from jaxdann.errors import TrainingDiverged
from jaxdann.methods import METHODS, get_method

# What a demo run scores without target labels (it validates on held-out source images).
DEMO_VALIDATORS = ("im", "entropy", "snd", "dev", "source_holdout_accuracy")


def demo_grid_config(**overrides):
    config = config_lib.demo_config()
    config.epochs = 1
    config.batch_size = 16
    config.data.limit = 32
    config.parallel.num_devices = 1
    config.log_every_epoch = False
    return config_lib.apply_overrides(config, {k: str(v) for k, v in overrides.items()})


@pytest.fixture(autouse=True)
def own_compilation_cache(monkeypatch):
    """The sweep's own cache folder, whatever the environment says; the process's cache settings
    are restored afterwards, so later tests do not write into this test's folder (every test
    here: a sweep points the process's cache into its tmp folder)."""
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def cached_train_steps(workdir):
    names = os.listdir(os.path.join(workdir, ".jax_cache"))
    return [name for name in names if name.startswith("jit_train_step") and name.endswith("-cache")]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_writes_results_heatmaps_and_selects_by_validation(
    tmp_path, monkeypatch, capsys, own_compilation_cache
):
    loads = []
    original = input_pipeline.load_experiment_data
    monkeypatch.setattr(
        input_pipeline, "load_experiment_data", lambda *a, **k: loads.append(1) or original(*a, **k)
    )
    workdir = str(tmp_path / "grid")
    rows = sweep.run_grid(demo_grid_config(), workdir, [0.01, 0.001], ["sgd", "adam"], ["dann"])
    assert len(loads) == 1  # data loaded once for the whole grid
    results = read_csv(os.path.join(workdir, "results.csv"))
    assert [(r["optimizer"], float(r["learning_rate"])) for r in results] == [
        ("sgd", 0.01),
        ("sgd", 0.001),
        ("adam", 0.01),
        ("adam", 0.001),
    ]
    for row in results:
        for key in ("train_accuracy", "validation_accuracy", "target_accuracy"):
            assert 0.0 <= float(row[key]) <= 1.0
        with open(os.path.join(row["run_folder"], "summary.json")) as f:
            summary = json.load(f)
        assert float(row["validation_accuracy"]) == summary["validation_accuracy"]
        assert float(row["target_accuracy"]) == summary["final_target_accuracy"]
        assert set(summary["validators"]) == set(DEMO_VALIDATORS)
        for name, score in summary["validators"].items():
            assert float(row[name]) == score, name
        assert row["held_out_domain_accuracy"] == "nan"  # the demo holds out source images
    selection = read_csv(os.path.join(workdir, "validators.csv"))
    assert tuple(row["validator"] for row in selection) == DEMO_VALIDATORS
    oracle = max(float(row["target_accuracy"]) for row in results)
    for row in selection:
        scores = [float(cell[row["validator"]]) for cell in results]
        best = min(scores) if row["validator"] == "dev" else max(scores)
        picked = next(cell for cell in results if float(cell[row["validator"]]) == best)
        assert row["picked"] == os.path.basename(picked["run_folder"])
        assert float(row["target_accuracy"]) == float(picked["target_accuracy"])
        assert float(row["oracle_target_accuracy"]) == oracle
        assert float(row["regret"]) == pytest.approx(oracle - float(picked["target_accuracy"]))
    for name in ("heatmap_train", "heatmap_validation", "heatmap_target_oracle", "best_curves"):
        assert os.path.getsize(os.path.join(workdir, f"{name}.png")) > 1000
    best = max(rows, key=lambda row: row["validation_accuracy"])
    out = capsys.readouterr().out
    assert f"best by validation is {best['optimizer']} lr={best['learning_rate']:g}" in out
    # Cells that differ only in learning rate share one compiled step: 2 optimizers, 2 steps.
    assert len(cached_train_steps(workdir)) == 2

    # A rerun skips finished cells and trains nothing.
    monkeypatch.setattr(
        "jaxdann.training.trainer.train_and_evaluate",
        lambda *a, **k: pytest.fail("a finished cell was trained again"),
    )
    again = sweep.run_grid(demo_grid_config(), workdir, [0.01, 0.001], ["sgd", "adam"], ["dann"])
    assert [row["status"] for row in again] == ["done earlier"] * 4
    assert [row["target_accuracy"] for row in again] == [row["target_accuracy"] for row in rows]


def selection_row(adaptation, optimizer, target, **scores):
    row = {"adaptation": adaptation, "optimizer": optimizer, "target_accuracy": target}
    row |= {name: scores.get(name, float("nan")) for name in sweep.VALIDATORS}
    return row | {"run_folder": os.path.join("grid", f"{adaptation}_{optimizer}")}


def test_each_validator_picks_by_its_own_sign_and_never_by_target_accuracy():
    rows = [
        selection_row("none", "sgd", 0.5, im=0.9, dev=2.0, snd=1.0),
        selection_row("none", "adam", 0.7, im=0.1, dev=1.0, snd=1.0),
        selection_row("dann", "sgd", 0.8, im=0.5, dev=3.0),
        selection_row("dann", "adam", float("nan"), im=5.0, dev=0.1),  # diverged: not a pick
    ]
    picks = {(r["validator"], r["among"]): r for r in sweep.select_by_validators(rows)}
    assert picks["im", "all"]["picked"] == "none_sgd"  # the largest IM
    assert picks["dev", "all"]["picked"] == "none_adam"  # the smallest DEV risk
    assert picks["snd", "all"]["picked"] == "none_sgd"  # a tie goes to the earlier row
    assert picks["im", "all"]["oracle"] == "dann_sgd"
    assert picks["im", "all"]["regret"] == pytest.approx(0.8 - 0.5)
    assert picks["dev", "dann"]["picked"] == "dann_sgd" and picks["dev", "dann"]["regret"] == 0
    assert picks["dev", "none"]["oracle_target_accuracy"] == 0.7
    assert ("snd", "dann") not in picks  # no dann cell has an SND score
    assert ("held_out_domain_accuracy", "all") not in picks
    one_method = sweep.select_by_validators(rows[:2])
    assert {row["among"] for row in one_method} == {"all"}


def test_the_oracle_is_the_best_cell_a_validator_could_pick():
    rows = [
        selection_row("dann", "sgd", 0.6, snd=1.0),
        selection_row("dann", "adam", 0.9),  # finished, but no SND score (a failed score)
        selection_row("dann", "rmsprop", 0.7, snd=0.5),
    ]
    (snd,) = sweep.select_by_validators(rows)
    assert snd["picked"] == "dann_sgd" and snd["oracle"] == "dann_rmsprop"
    assert snd["oracle_target_accuracy"] == 0.7 and snd["regret"] == pytest.approx(0.1)


def test_rerun_with_other_settings_is_refused_not_reported_as_done(tmp_path, capsys):
    workdir = str(tmp_path / "grid")
    rows = sweep.run_grid(demo_grid_config(), workdir, [0.01], ["sgd"], ["dann"])
    with open(os.path.join(workdir, "results.csv")) as f:
        before = f.read()
    changed = demo_grid_config(**{"grl.coefficient": 1.0})
    with pytest.raises(
        config_lib.ConfigError, match=r"different config \(grl\.coefficient: 0\.3, now 1\.0\)"
    ):
        sweep.run_grid(changed, workdir, [0.01], ["sgd"], ["dann"])
    with open(os.path.join(workdir, "results.csv")) as f:
        assert f.read() == before  # the first grid's results are kept
    assert rows[0]["status"] == "trained"
    argv = ["--workdir", workdir, "--learning_rates", "0.01", "--optimizers", "sgd"]
    argv += ["--adaptations", "dann"]
    demo = config_lib.flatten(config_lib.demo_config())
    argv += [f"--config.{k}={v}" for k, v in config_lib.flatten(changed).items() if v != demo[k]]
    assert sweep.main(argv) == 2
    assert "different config" in capsys.readouterr().err


def test_interrupted_cell_resumes(tmp_path):
    from jaxdann.training.trainer import train_and_evaluate

    workdir = str(tmp_path / "grid")
    config = demo_grid_config(epochs=2)
    cell = os.path.join(workdir, "dann_sgd_lr0.01")

    def crash(step):
        if step == 3:  # in epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, cell, progress=False, on_step=crash)
    rows = sweep.run_grid(config, workdir, [0.01], ["sgd"], ["dann"])
    assert rows[0]["status"] == "trained"
    with open(os.path.join(cell, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    # Extending the cell would give its first epochs a 2-epoch annealed schedule and ramp.
    longer = demo_grid_config(epochs=3)
    with pytest.raises(config_lib.ConfigError, match="holds a cell of 2 epochs; extending it"):
        sweep.run_grid(longer, workdir, [0.01], ["sgd"], ["dann"])


def test_sweep_command_line_errors(capsys):
    assert sweep.main(["--learning_rates", "0.1"]) == 2
    assert "needs --workdir" in capsys.readouterr().err
    assert sweep.main(["--workdir", "x", "--optimizers", "sgd,lbfgs"]) == 2
    assert "choose from sgd, adam, rmsprop" in capsys.readouterr().err


def test_report_from_runs_and_sweeps(tmp_path):
    grid = str(tmp_path / "grid")
    sweep.run_grid(demo_grid_config(), grid, [0.01, 0.001], ["sgd"], ["none", "dann"])
    output = str(tmp_path / "report")
    single = os.path.join(grid, "none_sgd_lr0.01")
    assert report.main([single, grid, "--output", output]) == 0
    with open(os.path.join(output, "report.md")) as f:
        markdown = f.read()
    rows = read_csv(os.path.join(output, "report.csv"))
    for name in ("heatmap_train", "heatmap_validation", "heatmap_target_oracle", "best_curves"):
        for adaptation in ("none", "dann"):  # two adaptations: one figure each, suffixed
            assert os.path.exists(os.path.join(grid, f"{name}_{adaptation}.png"))
    source_only, adapted = get_method("none").label, get_method("dann").label
    assert (rows[0]["method"], rows[0]["settings"]) == (source_only, "sgd lr 0.01")
    assert {row["method"] for row in rows[1:]} == {source_only, adapted}  # best of each
    assert all(row["settings"].endswith("(best of 2 by validation)") for row in rows[1:])
    with open(os.path.join(single, "summary.json")) as f:
        summary = json.load(f)
    assert f"{summary['final_target_accuracy']:.4f}" in markdown
    assert {row["task"] for row in rows} == {"digits -> digits_textured"}
    assert f"| {source_only} | sgd lr 0.01 | digits -> digits_textured |" in markdown
    assert "| target accuracy |" in markdown and f"| {single} |" in markdown
    moved = str(tmp_path / "moved_grid")  # results.csv keeps the paths as typed then
    os.rename(grid, moved)
    assert {row["task"] for row in report.collect_rows([moved])} == {"digits -> digits_textured"}
    for cell in os.listdir(moved):
        if os.path.exists(os.path.join(moved, cell, "config.json")):
            os.remove(os.path.join(moved, cell, "config.json"))
    assert report.main([moved, "--output", output]) == 1  # a damaged sweep folder
    with pytest.raises(SystemExit):
        report.main([])
    assert report.main([str(tmp_path)]) == 2


def test_all_pairs_table(
    tmp_path, monkeypatch, own_compilation_cache, write_pacs_tree, tiny_pacs_overrides
):
    root = tmp_path / "PACS"
    # Domains of different sizes (2 and 3 steps an epoch at batch 8): their runs still share
    # one compiled train step per adaptation, the run length being an argument of the step.
    write_pacs_tree(root, ("photo",), per_class=6)
    write_pacs_tree(root, ("sketch",), per_class=9)

    def cache_every_compilation(directory):
        sweep.enable_compilation_cache(directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    monkeypatch.setattr(pairs, "enable_compilation_cache", cache_every_compilation)
    overrides = tiny_pacs_overrides(root, tmp_path / "cache")
    overrides |= {"model.dropout_rate": "0", "epochs": "1"}
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    workdir = str(tmp_path / "pairs")
    rows = pairs.run_pairs(config, workdir, seeds=[0, 1], domains=["photo", "sketch"])
    assert len(rows) == 2 * 2 * 2  # ordered pairs x adaptations x seeds
    assert len(cached_train_steps(workdir)) == 2
    with open(os.path.join(workdir, "pairs.md")) as f:
        table = f.read()
    for pair in ("photo -> sketch", "sketch -> photo", "**average**"):
        assert pair in table
    photo_to_sketch = [
        r["target_accuracy"] for r in rows if (r["source"], r["adaptation"]) == ("photo", "dann")
    ]
    mean, std = np.mean(photo_to_sketch), np.std(photo_to_sketch, ddof=1)
    assert f"{mean:.4f} +- {std:.4f}" in table
    with open(os.path.join(workdir, "photo_to_sketch", "dann", "seed1", "summary.json")) as f:
        assert json.load(f)["data_root"] == str(root)  # the folder read, for the record
    # Rerun with other settings: refused at the first run folder, the table kept.
    changed = config_lib.apply_overrides(config, {"optimizer.name": "adam"})
    with pytest.raises(
        config_lib.ConfigError, match=r"different config \(optimizer\.name: 'sgd', now 'adam'\)"
    ):
        pairs.run_pairs(changed, workdir, seeds=[0, 1], domains=["photo", "sketch"])
    with open(os.path.join(workdir, "pairs.md")) as f:
        assert f.read() == table


def test_pairs_command_line_errors_and_a_single_seed_has_no_spread(capsys, tmp_path):
    nan = float("nan")
    assert pairs.main(["--workdir", "x", "--domains", "photo,photo"]) == 2
    assert "at least two different domains" in capsys.readouterr().err
    assert pairs.main(["--workdir", "x", "--seeds", "zero"]) == 2
    assert "--seeds=zero: expected integers" in capsys.readouterr().err
    assert pairs.main(["--workdir", "x", "--seeds", "0,-1"]) == 2  # numpy takes seeds >= 0
    assert "--seeds=0,-1: name each seed once, each 0 or more" in capsys.readouterr().err
    # Data that cannot be read is a failed run (1), as in jaxdann.train, not a bad flag (2).
    pacs_config = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "pacs_dann.py")
    missing = [f"--config.data.root={tmp_path / 'no_such_pacs'}", "--config.model.pretrained=none"]
    assert (
        pairs.main(["--workdir", str(tmp_path / "pairs"), "--config", pacs_config, *missing]) == 1
    )
    assert "no_such_pacs" in capsys.readouterr().err
    rows = [
        {"source": "a", "target": "b", "adaptation": adaptation, "seed": 0, "target_accuracy": acc}
        for adaptation, acc in (("none", 0.25), ("dann", 0.5))
    ]
    table = pairs.summarize_pairs(rows)
    assert "| a -> b | 0.2500 | 0.5000 | 1 |" in table
    assert "+-" not in table
    rows = [  # two of three DANN seeds diverged: said, not shown as a one-seed result
        {"source": "a", "target": "b", "adaptation": adaptation, "seed": seed, "target_accuracy": a}
        for adaptation, accuracies in (("none", (0.3, 0.31, 0.29)), ("dann", (0.5, nan, nan)))
        for seed, a in enumerate(accuracies)
    ]
    table = pairs.summarize_pairs(rows)
    assert "| a -> b | 0.3000 +- 0.0100 | 0.5000 (1 of 3; 2 diverged) | 3 |" in table


def test_sweep_and_pairs_refuse_sharded_data_on_several_processes(tmp_path, monkeypatch, capsys):
    # As if started as process 0 of 2: refused before any data is read (the root does not exist).
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    pacs_config = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "pacs_dann.py")
    missing = f"--config.data.root={tmp_path / 'no_such_pacs'}"
    for tool, extra in ((sweep, []), (pairs, ["--config", pacs_config, missing])):
        argv = ["--workdir", str(tmp_path / tool.__name__), "--config.data.shard_per_host=true"]
        assert tool.main([*argv, *extra]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1, error
        assert f"{tool.__name__} loads the data once" in error
        assert "data.shard_per_host cannot be true on 2 processes" in error


def test_report_names_a_damaged_summary(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"final_target_accuracy": 0.4')  # cut short
    (run / "config.json").write_text("{}")
    assert report.main([str(run), "--output", str(tmp_path / "out")]) == 1  # DamagedFile
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{run / 'summary.json'} is not valid JSON" in error


def test_a_finished_cell_counts_only_on_the_data_it_was_trained_on(tmp_path):
    import dataclasses

    config = demo_grid_config()
    data = input_pipeline.load_experiment_data(config)
    folder = str(tmp_path / "cell")
    assert sweep.run_cell(config, folder, data)[1] == "trained"
    # The same data read again (a moved data.root): the cell is done.
    again = input_pipeline.load_experiment_data(config)
    assert sweep.run_cell(config, folder, again)[1] == "done earlier"
    # One pixel of the target changed: refused, not reported as this data's result.
    images = data.target.images.copy()
    images[0, 0, 0, 0] ^= 1
    other = dataclasses.replace(data, target=input_pipeline.Split(images, data.target.labels))
    with pytest.raises(config_lib.ConfigError, match=r"trained on other data .*\(target: "):
        sweep.run_cell(config, folder, other)


# -- with a stand-in trainer: the grid's bookkeeping, in seconds, whatever the trainer does ----


def fake_train_and_evaluate(config, workdir, data=None, progress=True):
    """Writes what a finished run writes: config.json, metrics.jsonl rows with the method's
    epoch metrics, curves.png and summary.json; accuracies follow from the learning rate."""
    from jaxdann.training import run_folder

    os.makedirs(workdir, exist_ok=True)
    run_folder.write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(config))
    accuracy = min(0.9, 0.5 + float(config.optimizer.learning_rate) * 10)
    validation = None if config.data.validation in config_lib.NO_VALIDATION else accuracy - 0.1
    rows = []
    for epoch in range(1, config.epochs + 1):
        row = {"epoch": epoch}
        row |= {key: 0.5 for key in get_method(config.adaptation).epoch_metrics}
        row |= {"target_accuracy": accuracy - 0.2, "validation_accuracy": validation}
        rows.append(row | {"epoch_time_s": 0.1})
    run_folder.write_metrics(os.path.join(workdir, "metrics.jsonl"), rows)
    plots.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"))
    summary = {
        "final_source_accuracy": accuracy,
        "final_target_accuracy": accuracy - 0.2,
        "validation_accuracy": validation,
        "epochs": config.epochs,
        "adaptation": config.adaptation,
    }
    run_folder.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary


@pytest.fixture(name="fake_trainer")
def fake_trainer_fixture(monkeypatch):
    """jaxdann.training.trainer replaced by :func:`fake_train_and_evaluate`; returns the list of
    run folders it trained."""
    trained = []
    module = types.ModuleType("jaxdann.training.trainer")
    module.TrainingDiverged = TrainingDiverged

    def train(config, workdir, data=None, progress=True, study=None):
        trained.append(workdir)
        return fake_train_and_evaluate(config, workdir, data, progress)

    module.train_and_evaluate = train
    monkeypatch.setitem(sys.modules, "jaxdann.training.trainer", module)
    return trained


def test_sweep_help_shows_the_defaults_and_the_registered_adaptations(capsys):
    assert sweep.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert f"(default: {sweep.DEFAULT_LEARNING_RATES})" in out
    assert f"(default: {sweep.DEFAULT_OPTIMIZERS})" in out
    assert f"--adaptations LIST     from {', '.join(METHODS.names())}" in out
    assert pairs.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 0,1,2)" in out and f"e.g. PACS's {','.join(DOMAINS)})" in out
    assert f"from {', '.join(METHODS.names())} (default: none,dann)" in out


def test_an_unknown_adaptation_is_refused_with_the_registered_names(tmp_path, capsys):
    names = ", ".join(METHODS.names())
    assert sweep.main(["--workdir", str(tmp_path / "grid"), "--adaptations", "nonesuch"]) == 2
    assert f"--adaptations=nonesuch: choose from {names}" in capsys.readouterr().err
    assert pairs.main(["--workdir", str(tmp_path / "pairs"), "--adaptations", "nonesuch"]) == 2
    assert f"--adaptations=nonesuch: choose from {names}" in capsys.readouterr().err
    with pytest.raises(config_lib.ConfigError, match=f"choose one of {names}"):
        sweep.run_grid(demo_grid_config(), str(tmp_path / "grid"), [0.01], ["sgd"], ["nonesuch"])
    assert not os.path.exists(tmp_path / "grid")  # refused before anything is written


def test_omitted_flags_print_the_default_grid_and_repeats_run_once(tmp_path, capsys, fake_trainer):
    workdir = str(tmp_path / "grid")
    argv = ["--workdir", workdir, "--optimizers", "sgd,SGD", "--config.epochs=1"]
    assert sweep.main(argv + ["--config.data.limit=32"]) == 0
    out = capsys.readouterr().out
    assert f"--learning_rates not given: the default, {sweep.DEFAULT_LEARNING_RATES}" in out
    assert "--optimizers: sgd is given 2 times; it runs once" in out
    assert "learning rates 0.01, 0.001, 1e-05" in out
    assert len(fake_trainer) == 3  # one optimizer, three default learning rates
    assert len(read_csv(os.path.join(workdir, "results.csv"))) == 3
    # Equal values written differently are one learning rate.
    rates, notes = sweep.parse_floats("0.001,1e-3,0.01", "learning_rates")
    assert rates == [0.001, 0.01]
    assert notes == ["--learning_rates: 0.001 is given 2 times; it runs once"]
    argv = ["--workdir", workdir, "--learning_rates", "0.001,1e-3", "--optimizers", "sgd"]
    assert sweep.main(argv + ["--config.epochs=1", "--config.data.limit=32"]) == 0
    out = capsys.readouterr().out
    assert "--learning_rates: 0.001 is given 2 times; it runs once" in out
    assert "cell 1/1: dann sgd lr=0.001: done earlier" in out
    assert len(fake_trainer) == 3


def test_a_rerun_with_another_grid_keeps_every_finished_cell(
    tmp_path, capsys, monkeypatch, fake_trainer
):
    workdir = str(tmp_path / "grid")
    sweep.run_grid(demo_grid_config(), workdir, [0.01], ["sgd"], ["dann"])
    capsys.readouterr()
    drawn = {}

    def heatmap(values, rows, columns, title, path, **kwargs):
        drawn[os.path.basename(path)] = (list(rows), list(columns), np.asarray(values))

    monkeypatch.setattr(plots, "plot_heatmap", heatmap)
    rows = sweep.run_grid(demo_grid_config(), workdir, [0.001, 0.01], ["adam"], ["dann"])
    out = capsys.readouterr().out
    assert "cell 1/2: dann adam lr=0.001 -> " in out and "cell 2/2: dann adam lr=0.01 -> " in out
    assert "1 finished cell(s) of earlier grids" in out
    results = read_csv(os.path.join(workdir, "results.csv"))
    assert [(r["optimizer"], float(r["learning_rate"]), r["status"]) for r in results] == [
        ("adam", 0.001, "trained"),
        ("adam", 0.01, "trained"),
        ("sgd", 0.01, "done earlier"),
    ]
    assert len(rows) == 3
    optimizers, columns, values = drawn["heatmap_validation.png"]
    assert (optimizers, columns) == (["adam", "sgd"], ["0.01", "0.001"])
    assert np.isfinite(values[1, 0]) and np.isnan(values[1, 1])  # sgd ran at 0.01 only
    # The first grid again: finished cells say so, and nothing trains.
    trained = len(fake_trainer)
    sweep.run_grid(demo_grid_config(), workdir, [0.01], ["sgd"], ["dann"])
    out = capsys.readouterr().out
    assert "cell 1/1: dann sgd lr=0.01: done earlier" in out
    assert len(fake_trainer) == trained
    assert len(read_csv(os.path.join(workdir, "results.csv"))) == 3
    # A cell of other settings in the folder is named and left out of the table.
    other = demo_grid_config(epochs=2)
    fake_train_and_evaluate(
        sweep._cell_config(other, "dann", "rmsprop", 0.1),
        os.path.join(workdir, "dann_rmsprop_lr0.1"),
    )
    sweep.run_grid(demo_grid_config(), workdir, [0.01], ["sgd"], ["dann"])
    out = capsys.readouterr().out
    assert "left out of results.csv:\n  dann_rmsprop_lr0.1:" in out
    assert "rmsprop" not in {r["optimizer"] for r in read_csv(os.path.join(workdir, "results.csv"))}


def test_pairs_with_chosen_adaptations_and_their_report(
    tmp_path, capsys, write_pacs_tree, tiny_pacs_overrides, fake_trainer
):
    root = tmp_path / "PACS"
    write_pacs_tree(root, ("photo", "sketch"), per_class=3)
    overrides = tiny_pacs_overrides(root, tmp_path / "cache") | {"epochs": "1"}
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    workdir = str(tmp_path / "pairs")
    pairs.run_pairs(
        config, workdir, seeds=[0, 1], domains=["photo", "sketch"], adaptations=["none"]
    )
    table = capsys.readouterr().out
    assert f"| source -> target | {get_method('none').label} | seeds |\n|---|---|---|\n" in table
    assert len(fake_trainer) == 2 * 2
    assert report.main([workdir, "--output", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    rows = read_csv(tmp_path / "report" / "report.csv")
    assert [(r["task"], r["adaptation"], r["runs"]) for r in rows] == [
        ("photo -> sketch", "none", "2"),
        ("sketch -> photo", "none", "2"),
    ]
    assert f"| {get_method('none').label} | sgd lr 0.001 | photo -> sketch |" in out
    assert f"wrote report.md and report.csv in {tmp_path / 'report'}" in out

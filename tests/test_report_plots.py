"""The report and the figures, from run, sweep and pairs folders written by hand."""

import csv
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann import plots, report
from jaxdann.methods import METHODS, Method, get_method


def write_run(folder, target_accuracy=0.4, **overrides):
    """A finished run folder: config.json and summary.json, as the trainer writes them."""
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_lib.to_dict(config), f)
    summary = {
        "final_source_accuracy": 0.9,
        "final_target_accuracy": target_accuracy,
        "validation_accuracy": None,
        "epochs": config.epochs,
    }
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)
    return str(folder)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_alike_runs_are_told_apart_and_every_row_names_its_folder(tmp_path, capsys):
    folders = [
        write_run(tmp_path / "a", 0.41, adaptation="dann"),
        write_run(tmp_path / "b", 0.42, adaptation="dann", seed="1"),
        write_run(tmp_path / "c", 0.43, adaptation="dann", seed="2"),
        write_run(tmp_path / "d", 0.3, adaptation="none"),
    ]
    assert report.main([*folders, "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = read_csv(tmp_path / "out" / "report.csv")
    label = get_method("dann").label
    assert [row["settings"] for row in rows[:3]] == [
        f"sgd lr 0.001; seed={seed}" for seed in (0, 1, 2)
    ]
    assert [row["method"] for row in rows] == [label] * 3 + [get_method("none").label]
    assert [row["folder"] for row in rows] == folders
    for folder in folders:
        assert f"| {folder} |" in out
    assert "target accuracy" in out
    assert "test accuracy" not in out and "ADAP" not in out
    assert "| sgd lr 0.001; seed=1 | photo -> art_painting | 0.9000 | 0.4200 | - | 1 |" in out


def test_the_same_settings_in_two_folders_differ_by_folder_only(tmp_path):
    folders = [write_run(tmp_path / name) for name in ("x", "y")]
    rows = report.collect_rows(folders)
    assert [row["settings"] for row in rows] == ["sgd lr 0.001"] * 2
    assert [row["folder"] for row in rows] == folders


def test_report_says_where_it_wrote_and_shows_its_defaults(tmp_path, monkeypatch, capsys):
    run = write_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert report.main([run]) == 0
    assert f"wrote report.md and report.csv in {tmp_path}\n" in capsys.readouterr().out
    assert (tmp_path / "report.md").exists()
    with pytest.raises(SystemExit):
        report.main(["--help"])
    out = capsys.readouterr().out
    assert "(default: '.', the current directory)" in " ".join(out.split())
    assert "example:\n    python -m jaxdann.report runs/source_only" in out  # layout kept


# pairs_runs.csv joins a leave-one-out task's sources with commas; its folder with "+".
@pytest.mark.parametrize(
    ("sources", "task_folder"),
    [("photo", "photo_to_sketch"), ("photo,cartoon", "photo+cartoon_to_sketch")],
)
def test_a_pairs_folder_is_reported_and_an_unfinished_one_named(
    tmp_path, capsys, sources, task_folder
):
    pairs_folder = tmp_path / "pairs"
    runs = []
    for adaptation in ("none", "dann"):
        # seed0: a run an earlier command left, with other settings, not in pairs_runs.csv.
        stale = pairs_folder / task_folder / adaptation / "seed0"
        write_run(stale, 0.9, adaptation=adaptation, **{"optimizer.learning_rate": "0.5"})
        for seed, accuracy in ((1, 0.3), (2, 0.5), (3, float("nan"))):
            folder = pairs_folder / task_folder / adaptation / f"seed{seed}"
            overrides = {"adaptation": adaptation, "seed": str(seed)}
            if np.isfinite(accuracy):
                write_run(folder, accuracy, **overrides)
            runs.append(
                {
                    "source": sources,
                    "target": "sketch",
                    "adaptation": adaptation,
                    "seed": seed,
                    "target_accuracy": accuracy,
                    "status": "trained" if np.isfinite(accuracy) else "diverged",
                    "run_folder": str(folder),
                }
            )
    unfinished = str(tmp_path / "unfinished")
    os.makedirs(os.path.join(unfinished, "photo_to_sketch", "none", "seed0"))
    assert report.main([unfinished, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "is a jaxdann.pairs folder" in error and "rerun the same jaxdann.pairs command" in error
    with open(pairs_folder / "pairs_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    rows = report.collect_rows([str(pairs_folder)])
    assert [(row["adaptation"], row["task"], row["runs"]) for row in rows] == [
        ("none", f"{sources} -> sketch", 2),
        ("dann", f"{sources} -> sketch", 2),
    ]
    assert [row["target_accuracy"] for row in rows] == pytest.approx([0.4, 0.4])
    assert [row["train_accuracy"] for row in rows] == pytest.approx([0.9, 0.9])
    assert [row["settings"] for row in rows] == ["sgd lr 0.001"] * 2  # seeds are averaged
    assert rows[1]["folder"] == str(pairs_folder / task_folder / "dann")


def test_report_exit_codes(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2  # not a folder: a wrong argument
    assert "does not exist" in capsys.readouterr().err
    run = write_run(tmp_path / "run")
    os.remove(os.path.join(run, "summary.json"))
    assert report.main([run]) == 2
    assert "has not finished (no summary.json yet)" in capsys.readouterr().err
    with open(os.path.join(run, "summary.json"), "w") as f:
        f.write("{")
    assert report.main([run]) == 1  # a damaged run-folder file
    assert "is not valid JSON" in capsys.readouterr().err
    (tmp_path / "a_file").touch()  # --output names a file: the OS's error, in one line
    assert report.main([write_run(tmp_path / "good"), "--output", str(tmp_path / "a_file")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: [Errno 17] File exists") and error.count("\n") == 1


class Toy(Method):
    label = "toy method"
    epoch_metrics = ("learning_rate", "class_loss", "toy_loss", "source_accuracy", "toy_weight")


def test_curves_follow_the_methods_metrics(monkeypatch):
    rows = [{"epoch": 1, "learning_rate": 0.1, "class_loss": 1.0, "source_accuracy": 0.5}]
    rows[0] |= {"target_accuracy": 0.3, "epoch_time_s": 1.0}
    assert plots.curve_panels(rows) == {
        "losses": ["class_loss"],
        "accuracies": ["source_accuracy", "target_accuracy"],
        "learning_rate": ["learning_rate"],
    }
    toy_rows = [
        row | {"toy_loss": 0.2, "toy_weight": 0.5, "validation_accuracy": 0.4} for row in rows
    ]
    assert plots.curve_panels(toy_rows, Toy.epoch_metrics) == {
        "losses": ["class_loss", "toy_loss"],
        "accuracies": ["source_accuracy", "target_accuracy", "validation_accuracy"],
        "learning_rate": ["learning_rate"],
        "toy_weight": ["toy_weight"],
    }
    # A method's metric that no row holds (null) is not drawn.
    assert "toy_weight" not in plots.curve_panels([row | {"toy_weight": None} for row in rows])
    monkeypatch.setitem(METHODS._entries, "toy", Toy)
    assert report.method_label("toy") == "toy method"
    assert report.method_label("gone") == "gone"  # a folder of a method not installed


@pytest.fixture(name="drawn")
def drawn_fixture(monkeypatch):
    """The figures plots draws, kept open for inspection instead of closed."""
    figures, close = [], plt.close
    monkeypatch.setattr(plots.plt, "close", figures.append)
    yield figures
    for figure in figures:
        close(figure)


def test_one_epoch_curves_show_points_on_integer_ticks(tmp_path, drawn):
    metrics = tmp_path / "metrics.jsonl"
    row = {"epoch": 1, "target_accuracy": 0.3, "epoch_time_s": 1.0}
    row |= dict.fromkeys(get_method("dann").epoch_metrics, 0.5)
    metrics.write_text(json.dumps(row) + "\n")
    plots.plot_curves(str(metrics), str(tmp_path / "curves.png"))
    (figure,) = drawn
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert len(axes) == len(plots.curve_panels([row]))
    for axis in axes:
        for line in axis.get_lines():
            assert line.get_marker() == "o"
        axis.figure.canvas.draw()
        ticks = [
            tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]
        ]
        assert ticks == [1.0]


def test_the_confusion_matrix_has_a_colour_bar(tmp_path, drawn):
    plots.plot_confusion(np.array([[3, 1], [0, 4]]), ["cat", "dog"], str(tmp_path / "c.png"))
    (figure,) = drawn
    assert len(figure.axes) == 2  # the matrix and its colour bar
    assert os.path.getsize(tmp_path / "c.png") > 1000

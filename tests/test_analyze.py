"""python -m jaxdann.analyze: the proxy A-distance, t-SNE, and what a run folder gets."""

import json
import os

import numpy as np
import pytest

import jaxdann
from jaxdann import analyze
from jaxdann import config as config_lib
from jaxdann.errors import ConfigError


@pytest.fixture(autouse=True)
def one_thread_for_scikit_learn():
    """t-SNE's OpenMP threads spin against the other processes sharing a small test machine
    (6x slower for 1000 points on 2 busy cores); one thread keeps these tests in seconds."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def gaussian(rows, width, shift, seed):
    return np.random.default_rng(seed).normal(shift, 1.0, (rows, width))


def test_a_distance_of_separable_sets_is_2():
    far = analyze.proxy_a_distance(gaussian(200, 16, 0.0, 0), gaussian(200, 16, 3.0, 1))
    assert far["proxy_a_distance"] == 2.0 and far["domain_classifier_error"] == 0.0
    assert far["rows_per_domain"] == 200 and far["held_out_rows"] == 200


def test_a_distance_of_one_distribution_is_near_0():
    same = analyze.proxy_a_distance(gaussian(400, 16, 0.0, 0), gaussian(400, 16, 0.0, 1))
    assert abs(same["proxy_a_distance"]) < 0.3
    features = gaussian(300, 8, 0.0, 2)
    identical = analyze.proxy_a_distance(features, features.copy())
    assert abs(identical["proxy_a_distance"]) < 0.3
    # Sizes that differ are evened out: chance stays an error of 0.5, not the larger share.
    uneven = analyze.proxy_a_distance(gaussian(100, 16, 0.0, 3), gaussian(900, 16, 0.0, 4))
    assert uneven["rows_per_domain"] == 100 and abs(uneven["proxy_a_distance"]) < 0.4


def test_a_distance_grows_with_the_shift():
    """Partly overlapping sets fall between: 2 (1 - 2 err) with err the held-out error."""
    shifts = [0.0, 0.15, 0.4, 3.0]
    values = [
        analyze.proxy_a_distance(gaussian(400, 4, 0.0, 5), gaussian(400, 4, shift, 6))
        for shift in shifts
    ]
    distances = [value["proxy_a_distance"] for value in values]
    assert distances == sorted(distances) and 0.2 < distances[2] < 1.9
    for value in values:
        assert value["proxy_a_distance"] == pytest.approx(
            2 * (1 - 2 * value["domain_classifier_error"])
        )
    with pytest.raises(ConfigError, match="2 or more"):
        analyze.proxy_a_distance(gaussian(1, 4, 0.0, 0), gaussian(5, 4, 0.0, 0))


def test_tsne_keeps_separated_clusters_apart():
    features = np.concatenate([gaussian(30, 64, 0.0, 0), gaussian(30, 64, 8.0, 1)])
    points = analyze.tsne_embedding(features, seed=0)
    assert points.shape == (60, 2)
    np.testing.assert_array_equal(points, analyze.tsne_embedding(features, seed=0))
    first, second = points[:30], points[30:]
    within = max(np.ptp(first, axis=0).max(), np.ptp(second, axis=0).max())
    assert np.linalg.norm(first.mean(0) - second.mean(0)) > within


@pytest.fixture(scope="module", name="workdir")
def workdir_fixture(tmp_path_factory):
    """A finished demo run with a 16-wide bottleneck (BatchNorm statistics in its checkpoint):
    40 images per split, 1 epoch on one device."""
    from jaxdann.training.trainer import train_and_evaluate

    config = config_lib.demo_config()
    config.epochs, config.batch_size, config.data.limit = 1, 16, 40
    config.parallel.num_devices, config.log_every_epoch = 1, False
    config.model.bottleneck = 16
    workdir = str(tmp_path_factory.mktemp("analyze") / "run")
    train_and_evaluate(config, workdir, progress=False)
    return workdir


def test_analysis_is_written_into_the_run_folder(workdir, capsys):
    assert analyze.main(["--run", workdir, "--max-images", "30"]) == 0
    assert "proxy A-distance" in capsys.readouterr().out
    with open(os.path.join(workdir, analyze.ANALYSIS_FILE)) as f:
        analysis = json.load(f)
    assert analysis["checkpoint_epoch"] == 1 and analysis["images_per_domain"] == 30
    assert analysis["source"] == "digits" and analysis["held_out_rows"] == 30
    assert -2.0 <= analysis["proxy_a_distance"] <= 2.0
    for name in analyze.FIGURES.values():
        with open(os.path.join(workdir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [name for name in os.listdir(workdir) if name.endswith(".tmp.png")]
    tsne = analysis["tsne"]
    assert len(tsne["source"]["points"]) == len(tsne["target"]["points"]) == 30
    assert set(tsne["source"]["labels"]) <= set(range(10))
    # The numbers are those of the run's features for the same images.
    run = jaxdann.load_run(workdir)
    (source, _), (target, _) = analyze._analysis_data(run, 30, seed=0)
    features = [run.features(images, preprocessed=True) for images in (source, target)]
    expected = analyze.proxy_a_distance(*features, seed=0)
    assert analysis["proxy_a_distance"] == expected["proxy_a_distance"]
    assert analysis["feature_width"] == 16  # through the bottleneck


def test_a_run_with_batchnorm_predicts_what_it_evaluated(workdir):
    from jaxdann.data import pipeline

    run = jaxdann.load_run(workdir)
    assert "batch_stats" in run.variables[1]
    data = pipeline.load_experiment_data(run.config)
    predicted = run.predict(data.target_eval.images, preprocessed=True).argmax(axis=1)
    matrix = np.zeros((10, 10), np.int64)
    np.add.at(matrix, (data.target_eval.labels, predicted), 1)
    with open(os.path.join(workdir, "evaluation.json")) as f:
        np.testing.assert_array_equal(matrix, json.load(f)["confusion_matrix"])


def test_figures_redraw_from_the_json(workdir, tmp_path):
    analysis = analyze.analyze_run(workdir, max_images=12, seed=1)
    analyze.draw_figures(analysis, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(analyze.FIGURES.values())


def test_bad_arguments_exit_2(workdir, tmp_path, capsys):
    assert analyze.main(["--run", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert analyze.main(["--run", workdir, "--max-images", "1"]) == 2


def test_the_images_are_at_most_n_of_each_part_the_run_trained_on(
    tmp_path, monkeypatch, write_pacs_tree, tiny_pacs_overrides
):
    """A PACS run validated on the sources' hold-out lists aligned their train lists only: those
    are the images analysed, and no part has more than N of its images decoded."""
    from types import SimpleNamespace

    from jaxdann.data import DATASETS

    root = tmp_path / "PACS"
    write_pacs_tree(root, ("photo", "cartoon", "sketch"), per_class=5)
    for domain in ("photo", "cartoon"):  # images 0-2 of each class train, 3-4 are held out
        for split, kept in (("train", range(3)), ("crossval", range(3, 5))):
            lines = [
                f"{domain}/{c}/{i}.png {1 + k}" for k, c in enumerate(("cat", "dog")) for i in kept
            ]
            (root / f"{domain}_{split}_kfold.txt").write_text("\n".join(lines) + "\n")
    overrides = tiny_pacs_overrides(root, tmp_path / "cache")
    overrides |= {"data.source": "photo,cartoon", "data.validation": "source_holdout"}
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    dataset = DATASETS.get("pacs")
    train = np.concatenate(
        [dataset.load(d, "train", config.data).images for d in ("photo", "cartoon")]
    )
    held_out = [dataset.load(d, "crossval", config.data).images for d in ("photo", "cartoon")]
    loads, load = [], type(dataset).load

    def counting_load(self, domain, split, data, **kwargs):
        loaded = load(self, domain, split, data, **kwargs)
        loads.append((domain, split, len(loaded)))
        return loaded

    monkeypatch.setattr(type(dataset), "load", counting_load)
    run = SimpleNamespace(config=config, workdir=str(tmp_path), class_names=("cat", "dog"))
    (source, source_labels), (target, _) = analyze._analysis_data(run, 4, seed=0)
    assert loads == [("photo", "train", 4), ("cartoon", "train", 4), ("sketch", "all", 4)]
    assert len(source) == len(target) == 4
    flat = train.reshape(len(train), -1)
    for image, label in zip(source, source_labels, strict=True):
        rows = np.flatnonzero((flat == image.reshape(-1)).all(axis=1))
        assert len(rows) == 1 and label == (rows[0] % 6) // 3  # a train-list image, its class
    for images in held_out:
        assert not any(np.array_equal(image, other) for image in source for other in images)

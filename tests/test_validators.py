"""The validators on small arrays, against values worked out by hand or with plain numpy."""

import dataclasses
import math
import time

import numpy as np
import pytest

from jaxdann import validators


def one_hot(labels, classes):
    return np.eye(classes)[labels]


def test_uniform_predictions():
    classes = 5
    uniform = np.full((7, classes), 1 / classes)
    assert validators.entropy(uniform) == pytest.approx(-math.log(classes), abs=1e-12)
    assert validators.information_maximization(uniform) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(validators.softmax(np.zeros((3, classes))), uniform[:3])


def test_confident_predictions_spread_or_collapsed():
    classes = 4
    spread = one_hot(np.arange(8) % classes, classes)
    assert validators.entropy(spread) == 0.0
    assert validators.information_maximization(spread) == pytest.approx(math.log(classes))
    collapsed = one_hot(np.zeros(8, int), classes)  # confident, but every row the same class
    assert validators.entropy(collapsed) == 0.0
    assert validators.information_maximization(collapsed) == 0.0


def test_entropy_and_im_by_hand():
    rows = np.array([[0.5, 0.5], [1.0, 0.0]])
    # Row entropies: log 2 and 0; the mean prediction is (3/4, 1/4).
    assert validators.entropy(rows) == pytest.approx(-math.log(2) / 2)
    of_mean = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert validators.information_maximization(rows) == pytest.approx(of_mean - math.log(2) / 2)


def test_snd_of_identical_rows_is_log_of_the_neighbours():
    rows = np.tile([[0.2, 0.3, 0.5]], (6, 1))
    # Every other row is equally similar: a uniform distribution over the 5 others.
    assert validators.soft_neighborhood_density(rows) == pytest.approx(math.log(5))


def test_snd_of_two_tight_clusters_by_hand():
    rows = one_hot(np.array([0, 0, 1, 1]), 2)
    # Each row: cosine similarity 1 to its twin, 0 to the two others; temperature 0.05.
    weights = np.array([math.exp(1 / 0.05), 1.0, 1.0])
    p = weights / weights.sum()
    expected = -float(np.sum(p * np.log(p)))
    assert validators.soft_neighborhood_density(rows) == pytest.approx(expected, rel=1e-9)


def reference_snd(probabilities, temperature):
    """SND written out row by row (Saito et al. 2021, Sec. 3)."""
    unit = probabilities / np.linalg.norm(probabilities, axis=1, keepdims=True)
    entropies = []
    for i in range(len(unit)):
        others = [j for j in range(len(unit)) if j != i]
        similarities = np.array([unit[i] @ unit[j] for j in others]) / temperature
        p = np.exp(similarities - similarities.max())
        p /= p.sum()
        entropies.append(-np.sum(p * np.log(p)))
    return float(np.mean(entropies))


def test_snd_matches_a_row_by_row_reference_in_any_chunking():
    rng = np.random.default_rng(0)
    probabilities = validators.softmax(rng.normal(size=(23, 4)) * 3)
    expected = reference_snd(probabilities, 0.05)
    assert validators.soft_neighborhood_density(probabilities) == pytest.approx(expected)
    for chunk in (1, 5, 23):
        got = validators.soft_neighborhood_density(probabilities, chunk=chunk)
        assert got == pytest.approx(expected, rel=1e-12)
    hotter = validators.soft_neighborhood_density(probabilities, temperature=1.0)
    assert hotter == pytest.approx(reference_snd(probabilities, 1.0))


def test_snd_scores_a_fixed_sample_of_a_large_input_and_all_of_a_small_one():
    cap = 300
    # N identical rows score log(N - 1): capped, the neighbours are the sampled rows.
    same = np.tile([[0.7, 0.2, 0.1]], (cap + 50, 1))
    assert validators.soft_neighborhood_density(same, max_rows=cap) == pytest.approx(
        math.log(cap - 1), rel=1e-12
    )
    rng = np.random.default_rng(7)
    large = validators.softmax(rng.normal(size=(cap + 50, 4)) * 3)
    capped = validators.soft_neighborhood_density(large, max_rows=cap)
    assert validators.soft_neighborhood_density(large, max_rows=cap) == capped  # the same rows
    assert capped != validators.soft_neighborhood_density(large, max_rows=len(large))
    small = large[:cap]  # no more rows than the cap: every row is scored
    assert validators.soft_neighborhood_density(
        small, max_rows=cap
    ) == validators.soft_neighborhood_density(small, max_rows=10**9)
    assert validators.SND_MAX_ROWS == 4096


def test_cross_entropy_by_hand():
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    losses = validators.per_sample_cross_entropy(logits, np.array([1, 0]))
    np.testing.assert_allclose(losses, [-math.log(0.75), -math.log(0.25)])


def test_dev_risk_with_equal_weights_is_the_mean_loss():
    losses = np.array([0.1, 2.0, 0.7, 1.3])
    assert validators.dev_risk(losses, np.ones(4)) == pytest.approx(losses.mean(), abs=1e-15)


def test_dev_risk_of_a_constant_loss_is_that_loss_whatever_the_weights():
    weights = np.random.default_rng(1).exponential(size=50)
    # eta = -Cov(c w, w) / Var(w) = -c: the control variate removes the weights entirely.
    assert validators.dev_risk(np.full(50, 0.8), weights) == pytest.approx(0.8)


def test_dev_risk_against_sums_written_out():
    rng = np.random.default_rng(2)
    losses, weights = rng.exponential(size=40), rng.exponential(size=40)
    weighted = weights * losses
    n = len(losses)
    covariance = np.sum((weighted - weighted.mean()) * (weights - weights.mean())) / (n - 1)
    variance = np.sum((weights - weights.mean()) ** 2) / (n - 1)
    eta = -covariance / variance
    expected = weighted.mean() + eta * weights.mean() - eta
    assert validators.dev_risk(losses, weights) == pytest.approx(expected, rel=1e-12)


def test_density_ratio_of_two_gaussians():
    # Source N(0, 1), target N(1, 1): p_t(x) / p_s(x) = exp(x - 1/2), linear in x on a log
    # scale, so the logistic regression can learn it exactly.
    rng = np.random.default_rng(3)
    source = rng.normal(0.0, 1.0, size=(4000, 1))
    target = rng.normal(1.0, 1.0, size=(2000, 1))  # unequal counts: the prior ratio matters
    query = np.array([[-1.0], [0.0], [0.5], [1.0], [2.0]])
    ratio = validators.density_ratio(source, target, query)
    np.testing.assert_allclose(ratio, np.exp(query[:, 0] - 0.5), rtol=0.15)


def test_dev_with_identical_domains_is_about_the_mean_loss():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(600, 8))
    holdout = rng.normal(size=(200, 8))
    logits, labels = rng.normal(size=(200, 3)), rng.integers(0, 3, 200)
    weights = validators.density_ratio(features, features, holdout)
    # The classifier cannot tell the domains apart: the ratio is about 1 everywhere.
    assert abs(weights.mean() - 1) < 0.01 and weights.std() < 0.1
    mean_loss = validators.per_sample_cross_entropy(logits, labels).mean()
    dev = validators.deep_embedded_validation(features, features, holdout, logits, labels)
    assert dev == pytest.approx(mean_loss, rel=1e-3)


def test_dev_weights_the_source_images_that_look_like_the_target():
    rng = np.random.default_rng(5)
    source = np.r_[rng.normal(-2, 0.5, (300, 2)), rng.normal(2, 0.5, (300, 2))]
    target = rng.normal(2, 0.5, (300, 2))  # like the second half of the source
    holdout = np.r_[rng.normal(-2, 0.5, (50, 2)), rng.normal(2, 0.5, (50, 2))]
    labels = np.zeros(100, int)
    wrong_far, wrong_near = np.tile([[0.0, 3.0]], (100, 1)), np.tile([[0.0, 3.0]], (100, 1))
    wrong_far[50:] = [3.0, 0.0]  # wrong only where the target is not
    wrong_near[:50] = [3.0, 0.0]  # wrong only where the target is
    far = validators.deep_embedded_validation(source, target, holdout, wrong_far, labels)
    near = validators.deep_embedded_validation(source, target, holdout, wrong_near, labels)
    # The plain mean loss is the same for both; DEV sees that only `near` fails on the target.
    assert near > 1.0 > 0.5 > far
    assert validators.is_better("dev", far, near)


def test_dev_stays_finite_on_domains_the_classifier_tells_apart():
    rng = np.random.default_rng(6)
    source, target = rng.normal(0, 1, (200, 2)), rng.normal(40, 1, (200, 2))
    # Half the hold-out lies far beyond the target: P(source | x) underflows there.
    holdout = np.r_[rng.normal(0, 1, (20, 2)), rng.normal(4000, 1, (20, 2))]
    logits, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    weights = validators.density_ratio(source, target, holdout)
    floor = validators.DENSITY_RATIO_FLOOR
    assert weights.max() == pytest.approx((1 - floor) / floor)  # equal domain sizes: prior 1
    assert math.isfinite(
        validators.deep_embedded_validation(source, target, holdout, logits, labels)
    )


def test_sign_conventions():
    assert set(validators.HIGHER_IS_BETTER) == set(validators.VALIDATORS)
    assert not validators.HIGHER_IS_BETTER["dev"]
    assert validators.is_better("im", 1.0, 0.5) and validators.is_better("dev", 0.5, 1.0)
    assert math.isnan(validators.soft_neighborhood_density(np.ones((1, 3))))  # no neighbour


def test_what_the_validation_data_holds_out():
    from jaxdann import config as config_lib
    from jaxdann.training.trainer import _validation_kind

    demo = config_lib.demo_config()
    assert _validation_kind(demo) == "source_holdout"
    assert _validation_kind(config_lib.apply_overrides(demo, {"data.validation": "none"})) is None
    pacs = config_lib.base_config()  # photo -> art_painting, validated on cartoon and sketch
    assert _validation_kind(pacs) == "held_out_domain"
    # The source itself is no hold-out: no accuracy validator then.
    assert _validation_kind(config_lib.apply_overrides(pacs, {"data.validation": "photo"})) is None


def test_a_run_scores_its_target_train_images_and_never_reads_their_labels(tmp_path, monkeypatch):
    from jaxdann import config as config_lib
    from jaxdann.data import pipeline as input_pipeline
    from jaxdann.training.trainer import Study, train_and_evaluate

    config = config_lib.demo_config()
    config.update_from_flattened_dict(
        {"epochs": 1, "batch_size": 16, "data.limit": 40, "parallel.num_devices": 1}
    )
    config.log_every_epoch = False
    scored_rows, pause = [], []  # pause: seconds each scoring takes on top
    original_im = validators.information_maximization
    monkeypatch.setattr(
        validators,
        "information_maximization",
        lambda p: scored_rows.append(len(p)) or time.sleep(sum(pause)) or original_im(p),
    )
    study = Study()
    summary = train_and_evaluate(config, str(tmp_path / "a"), progress=False, study=study)
    data = input_pipeline.load_experiment_data(config)
    assert scored_rows == [len(data.target)]  # the target-train split, not target_eval
    scores = summary["validators"]
    assert set(scores) == {"im", "entropy", "snd", "dev", "source_holdout_accuracy"}
    assert scores["source_holdout_accuracy"] == summary["validation_accuracy"]
    assert -math.log(10) <= scores["entropy"] <= 0 and 0 <= scores["im"] <= math.log(10)
    assert 0 <= scores["snd"] <= math.log(len(data.target) - 1) and scores["dev"] > 0

    original_load = input_pipeline.load_experiment_data

    def permuted_target_labels(*args, **kwargs):
        loaded = original_load(*args, **kwargs)
        labels = np.random.default_rng(0).permutation(loaded.target.labels)
        assert not np.array_equal(labels, loaded.target.labels)
        target = input_pipeline.Split(loaded.target.images, labels)
        return dataclasses.replace(loaded, target=target)

    monkeypatch.setattr(input_pipeline, "load_experiment_data", permuted_target_labels)
    pause.append(2.0)
    again = train_and_evaluate(config, str(tmp_path / "b"), progress=False, study=study)
    assert again["validators"] == scores
    # The validators' time is reported apart and is not training time.
    assert again["validators_time_s"] >= 2.0 and again["train_time_s"] < 2.0, again


def test_a_finished_run_without_validators_gets_them_in_its_last_metrics_row(tmp_path):
    import json
    import os

    from jaxdann import config as config_lib
    from jaxdann.training.trainer import Study, train_and_evaluate

    config = config_lib.demo_config()
    config.update_from_flattened_dict(
        {"epochs": 1, "batch_size": 16, "data.limit": 40, "parallel.num_devices": 1}
    )
    config.log_every_epoch = False
    workdir = str(tmp_path / "run")
    study = Study()
    first = train_and_evaluate(config, workdir, progress=False, study=study)
    metrics = os.path.join(workdir, "metrics.jsonl")
    with open(metrics) as f:
        rows = [json.loads(line) for line in f]
    with open(metrics, "w") as f:  # as a run written before the validators existed
        f.writelines(
            json.dumps({k: v for k, v in row.items() if k != "validators"}) + "\n" for row in rows
        )
    again = train_and_evaluate(config, workdir, progress=False, study=study)
    with open(metrics) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["validators"] == again["validators"] == first["validators"]
    assert last == rows[-1]  # the rest of the row is as it was

"""Scores that choose a model without target labels, as their papers define them.

Every function takes batch-first numpy arrays (rows are images) and returns one float. What each
reads: ``im``, ``entropy`` and ``snd`` the class probabilities of the unlabelled target-train
images; ``dev`` the features of the source-train and target-train images and the logits, labels
and features of a source hold-out. Musgrave et al. (2022), "Three New Validators and a
Large-Scale Benchmark Ranking for Unsupervised Domain Adaptation", compare them.

Sign conventions (:data:`HIGHER_IS_BETTER`): ``im``, ``entropy``, ``snd`` and the accuracies
are larger for a better model; ``dev`` is a risk, smaller for a better model. A sweep picks the
cell with the largest score, or the smallest ``dev``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "HIGHER_IS_BETTER",
    "VALIDATORS",
    "deep_embedded_validation",
    "density_ratio",
    "dev_risk",
    "entropy",
    "information_maximization",
    "is_better",
    "per_sample_cross_entropy",
    "soft_neighborhood_density",
    "softmax",
]

# Every validator a run may report, and whether a larger score means a better model.
HIGHER_IS_BETTER = {
    "im": True,
    "entropy": True,
    "snd": True,
    "dev": False,
    "source_holdout_accuracy": True,
    "held_out_domain_accuracy": True,
}
VALIDATORS = tuple(HIGHER_IS_BETTER)
SND_TEMPERATURE = 0.05  # Saito et al. 2021's temperature
# SND compares every row with every other: at most this many rows, a sample drawn with SND_SEED.
SND_MAX_ROWS = 4096
SND_SEED = 0
DEV_MIN_IMAGES = 5  # fewer source, target or hold-out images: no DEV
# The domain classifier's probabilities are clipped to [floor, 1 - floor]: an importance weight
# is then at most about 1e6 times the prior ratio, and DEV stays finite on domains it tells apart.
DENSITY_RATIO_FLOOR = 1e-6
_TINY = np.finfo(np.float64).tiny


def is_better(name: str, score: float, than: float) -> bool:
    """Whether ``score`` ranks above ``than`` for validator ``name``."""
    return score > than if HIGHER_IS_BETTER[name] else score < than


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits ``[N, C]`` (float64, rows summing to 1)."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _row_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row; 0 log 0 counts as 0."""
    p = np.asarray(probabilities, np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -np.sum(p * logs, axis=-1)


def entropy(probabilities: np.ndarray) -> float:
    """Minus the mean prediction entropy over the rows of ``probabilities`` ``[N, C]``.

    Confident target predictions score high (0 at best, one-hot rows; ``-log C`` for uniform
    rows). pytorch-adapt's ``EntropyValidator``; Morerio et al. 2018 use entropy to choose.
    """
    return float(-np.mean(_row_entropy(probabilities)))


def information_maximization(probabilities: np.ndarray) -> float:
    """The entropy of the mean prediction minus the mean prediction entropy (nats).

    High when each row is confident and the rows spread over the classes (Gomes et al. 2010's
    mutual information between input and predicted class; pytorch-adapt's ``IMValidator``, the
    sum of its entropy and diversity validators). 0 for uniform rows and for rows that all
    predict one class; ``log C`` for one-hot rows spread evenly over ``C`` classes.
    """
    p = np.asarray(probabilities, np.float64)
    return float(_row_entropy(p.mean(axis=0)) - np.mean(_row_entropy(p)))


def soft_neighborhood_density(
    probabilities: np.ndarray,
    temperature: float = SND_TEMPERATURE,
    chunk: int = 256,
    max_rows: int = SND_MAX_ROWS,
) -> float:
    """Soft neighbourhood density (Saito et al. 2021, "Tune it the Right Way", ICCV).

    The rows (the softmax outputs of the target images) are L2-normalised; each row's cosine
    similarities to every other row, divided by ``temperature``, go through a softmax (the row
    itself left out); SND is the mean entropy of these distributions. Higher: target images
    sit in dense neighbourhoods of images predicted alike. ``N`` identical rows score
    ``log(N - 1)``. ``chunk`` rows are compared at a time, so memory stays ``chunk x N``.

    The work grows as ``N^2``: of more than ``max_rows`` rows, a sample of ``max_rows`` drawn
    without replacement with the fixed seed :data:`SND_SEED` is scored (the same rows every
    time for the same ``N``); fewer rows are scored all.
    """
    p = np.asarray(probabilities, np.float64)
    if len(p) > max_rows:
        rows = np.random.default_rng(SND_SEED).choice(len(p), max_rows, replace=False)
        p = p[np.sort(rows)]
    if len(p) < 2:
        return float("nan")
    unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), _TINY)
    entropies = []
    for start in range(0, len(unit), chunk):
        rows = np.arange(start, min(start + chunk, len(unit)))
        logits = unit[rows] @ unit.T / temperature
        logits[np.arange(len(rows)), rows] = -np.inf  # a row is not its own neighbour
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        entropies.append(_row_entropy(weights / weights.sum(axis=1, keepdims=True)))
    return float(np.mean(np.concatenate(entropies)))


def per_sample_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``-log softmax(logits)[label]`` for each row (nats)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return log_norm - logits[np.arange(len(logits)), np.asarray(labels)]


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """The DEV risk of per-sample ``losses`` with importance ``weights`` (You et al. 2019,
    "Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML, Alg. 1).

    ``mean(w l) + eta mean(w) - eta`` with the control variate ``eta = -Cov(w l, w) / Var(w)``
    (sample covariance and variance): the importance-weighted loss, its variance reduced by
    the weights' known mean of 1. Weights without variance (identical domains) give
    ``eta = 0``: the weighted mean loss. Lower is better.
    """
    losses, weights = np.asarray(losses, np.float64), np.asarray(weights, np.float64)
    weighted = weights * losses
    variance = np.var(weights, ddof=1) if len(weights) > 1 else 0.0
    eta = 0.0
    if variance > 0:
        eta = -np.cov(weighted, weights, ddof=1)[0, 1] / variance
    return float(np.mean(weighted) + eta * np.mean(weights) - eta)


def density_ratio(
    source_features: np.ndarray,
    target_features: np.ndarray,
    query_features: np.ndarray,
    *,
    seed: int = 0,
    strengths: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
) -> np.ndarray:
    """``p_target(x) / p_source(x)`` at each row of ``query_features``, from a domain classifier.

    As DEV does: a probabilistic classifier tells source-train (label 1) from target-train
    (label 0) features, and the ratio is ``P(target | x) / P(source | x) * N_s / N_t``. The
    classifier is an L2-regularised logistic regression on standardised features (DEV's
    reference code uses a small MLP; any calibrated probabilistic classifier serves); its
    inverse regularisation strength is chosen from ``strengths`` by the log-loss on a held-out
    fifth of the features, split with ``seed`` (DEV's code chooses by accuracy, which cannot
    tell a calibrated ratio from a flattened one). The probabilities are clipped to
    ``[DENSITY_RATIO_FLOOR, 1 - DENSITY_RATIO_FLOOR]`` (a floor of 1e-6), so no ratio exceeds
    about ``1e6 N_s / N_t``: the weights of domains the classifier separates stay finite.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    features = np.concatenate([source_features, target_features]).astype(np.float64)
    domains = np.r_[np.ones(len(source_features)), np.zeros(len(target_features))]
    fit_x, held_x, fit_y, held_y = train_test_split(
        features, domains, test_size=0.2, random_state=seed, stratify=domains
    )
    scaler = StandardScaler().fit(fit_x)
    fit_x, held_x = scaler.transform(fit_x), scaler.transform(held_x)
    best, best_loss = None, math.inf
    for strength in strengths:
        # One BLAS thread: these small products gain nothing from more, and threads that wait
        # for cores XLA holds made a fit 50x slower on 2 cores.
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)  # the held-out loss still ranks
            classifier = LogisticRegression(C=strength, max_iter=1000).fit(fit_x, fit_y)
        loss = log_loss(held_y, classifier.predict_proba(held_x)[:, 1])
        if loss < best_loss:
            best, best_loss = classifier, loss
    source_probability = best.predict_proba(scaler.transform(query_features))[:, 1]
    floor = DENSITY_RATIO_FLOOR
    source_probability = np.clip(source_probability, floor, 1.0 - floor)
    prior = len(source_features) / len(target_features)
    return (1.0 - source_probability) / source_probability * prior


def deep_embedded_validation(
    source_features: np.ndarray,
    target_features: np.ndarray,
    holdout_features: np.ndarray,
    holdout_logits: np.ndarray,
    holdout_labels: np.ndarray,
    *,
    seed: int = 0,
) -> float:
    """DEV (You et al. 2019): the source hold-out's cross-entropy, importance-weighted by
    :func:`density_ratio` at its features, with the control variate (:func:`dev_risk`).

    An estimate of the target risk; **lower is better** (pytorch-adapt reports its negative).
    NaN with fewer than :data:`DEV_MIN_IMAGES` images of either domain or in the hold-out (the
    domain classifier needs a held-out part of each domain).
    """
    counts = (len(source_features), len(target_features), len(holdout_features))
    if min(counts) < DEV_MIN_IMAGES:
        return math.nan
    weights = density_ratio(source_features, target_features, holdout_features, seed=seed)
    return dev_risk(per_sample_cross_entropy(holdout_logits, holdout_labels), weights)

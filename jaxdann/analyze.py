"""``python -m jaxdann.analyze --run DIR [--max-images N] [--seed S] [--num-devices N]``

Whether a run aligned its domains, with TLlib's two analysis tools, on the features the method
aligns (the backbone's, through the bottleneck if any) at the run's newest checkpoint:

- t-SNE of source and target features (scikit-learn), drawn twice: ``tsne_domains.png``
  coloured by domain, ``tsne_classes.png`` coloured by class (the target's labels colour it;
  they choose nothing);
- the proxy A-distance, ``2 (1 - 2 err)``, where ``err`` is the held-out error of a linear
  classifier telling source features from target features: 2 when it always tells them apart,
  about 0 when it cannot (a value below 0 is chance: an error a little over 0.5).

Up to N images of the source and as many of the target, from the parts the run trained on (its
dataset's plan for its config: the source training split(s) and the target's training split),
at most N decoded per part: the fixed subset ``data.limit`` selects, so within the run's own
when it trained with a limit. The seed picks the rows kept of a several-source union, the
classifier's split and the t-SNE start. Everything is written into the run folder, the numbers
and the t-SNE points in ``analysis.json``.

Exit status: 0 done; 1 the data or a run file cannot be read; 2 bad arguments (a folder that is
not a run, a run without checkpoint, a bad flag); 130 interrupted.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence

import numpy as np

from jaxdann import config as config_lib
from jaxdann.errors import INTERRUPTED, ConfigError, exit_code, is_user_error

__all__ = [
    "ANALYSIS_FILE",
    "analyze_run",
    "draw_figures",
    "main",
    "plot_tsne",
    "proxy_a_distance",
    "tsne_embedding",
]

ANALYSIS_FILE = "analysis.json"
FIGURES = {"domain": "tsne_domains.png", "class": "tsne_classes.png"}
_TSNE_INPUT_WIDTH = 50  # features wider than this are reduced by PCA first, as sklearn advises


def proxy_a_distance(
    source: np.ndarray, target: np.ndarray, *, seed: int = 0, held_out: float = 0.5
) -> dict:
    """The proxy A-distance between two feature sets (rows), and how it was measured.

    A linear classifier (scikit-learn's ``LogisticRegression``, L2 penalty C=1, on features
    standardised with the training part's statistics) learns source vs target on a random
    ``1 - held_out`` of the rows, stratified by domain; ``err`` is its error on the rest. The sets
    are first cut to the same size (the first rows of the larger), so chance is an error of 0.5
    whatever their sizes. Logistic regression minimises the loss TLlib's ``ANet`` (one linear
    layer, a sigmoid, binary cross-entropy) trains with SGD for 10 epochs; solved to convergence
    here, the number needs no learning rate or epoch count and is the same on every run.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    count = min(len(source), len(target))
    if count < 2:
        raise ConfigError(f"the proxy A-distance needs 2 or more rows per domain, got {count}.")
    features = np.concatenate([source[:count], target[:count]]).astype(np.float64)
    domains = np.repeat([0, 1], count)
    train_x, test_x, train_y, test_y = train_test_split(
        features, domains, test_size=held_out, stratify=domains, random_state=seed
    )
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    classifier.fit(train_x, train_y)
    error = float(np.mean(classifier.predict(test_x) != test_y))
    return {
        "proxy_a_distance": 2.0 * (1.0 - 2.0 * error),
        "domain_classifier_error": error,
        "domain_classifier": "sklearn LogisticRegression(C=1) on standardised features",
        "rows_per_domain": int(count),
        "train_rows": int(len(train_y)),
        "held_out_rows": int(len(test_y)),
    }


def tsne_embedding(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """float [N, 2]: scikit-learn's t-SNE of the rows (PCA to 50 dimensions first when wider;
    perplexity 30, or (N - 1) / 3 for fewer than 91 rows, which t-SNE needs below N)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float64)
    if features.shape[1] > _TSNE_INPUT_WIDTH and len(features) > _TSNE_INPUT_WIDTH:
        features = PCA(_TSNE_INPUT_WIDTH, random_state=seed).fit_transform(features)
    perplexity = min(30.0, (len(features) - 1) / 3.0)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features)


def plot_tsne(
    points: np.ndarray,
    domains: np.ndarray,
    labels: np.ndarray,
    output_path: str,
    *,
    colour_by: str,
    domain_names: Sequence[str],
    class_names: Sequence[str],
    title: str = "",
) -> None:
    """One t-SNE figure: points coloured by ``colour_by`` ("domain" or "class"); in the class
    figure the source is drawn as dots, the target as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 6))
    if colour_by == "domain":
        for index, (name, colour) in enumerate(
            zip(domain_names, ("tab:red", "tab:blue"), strict=True)
        ):
            rows = domains == index
            axis.scatter(*points[rows].T, s=12, c=colour, alpha=0.6, label=f"{name} (domain)")
    else:
        colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
        for index, name in enumerate(domain_names):
            rows, marker = domains == index, "ox"[index]
            colour = [colours(k % 20) for k in labels[rows]]
            axis.scatter(*points[rows].T, s=14, c=colour, marker=marker, alpha=0.7)
            axis.scatter([], [], s=14, c="grey", marker=marker, label=name)
        for k, name in enumerate(class_names):
            axis.scatter([], [], c=[colours(k % 20)], s=14, label=name)
    axis.legend(fontsize=7, markerscale=1.5, loc="best")
    axis.set(xticks=[], yticks=[], title=title or f"t-SNE of features, coloured by {colour_by}")
    figure.tight_layout()
    figure.savefig(output_path, dpi=110)
    plt.close(figure)


def _analysis_data(run, max_images: int, seed: int):
    """(source, target) images and labels from the parts the run trained on (its dataset's plan
    for its config: the source parts, a union when several, and the target's training split),
    the same number of rows of each (at most ``max_images``).

    At most ``max_images`` images of each part are decoded: the fixed subset ``data.limit``
    selects (within the run's own when it trained with a limit); ``seed`` picks the rows kept of
    a larger union. Read as the run read them: its config, and the data folder its summary
    names when the config's is relative and not found from here.
    """
    from jaxdann.data import DATASETS
    from jaxdann.training.run_folder import read_json

    data = copy.deepcopy(run.config.data)
    summary = os.path.join(run.workdir, "summary.json")
    recorded = read_json(summary).get("data_root") if os.path.exists(summary) else None
    if recorded and not os.path.isdir(data.root or "") and os.path.isdir(recorded):
        data.root = recorded
    dataset = DATASETS.get(data.name)
    dataset.check_settings(data)
    plan = dataset.plan(data)
    limit = min(max_images, data.limit) if data.limit > 0 else max_images
    source = [_read_part(dataset, part, data, limit, run.class_names) for part in plan.source]
    target = _read_part(dataset, plan.target, data, limit, run.class_names)
    source_images = np.concatenate([domain.images for domain in source])
    source_labels = np.concatenate([domain.labels for domain in source])
    count = min(max_images, len(source_labels), len(target))
    rng = np.random.default_rng(seed)

    def pick(images, labels):
        rows = np.sort(rng.choice(len(labels), count, replace=False))
        return images[rows], labels[rows]

    return pick(source_images, source_labels), pick(target.images, target.labels)


def _read_part(dataset, part: tuple[str, str], data, limit: int, class_names: Sequence[str]):
    """At most ``limit`` images of one (domain, split) part; a DataError when its classes are
    no longer the run's."""
    from jaxdann.errors import DataError

    loaded = dataset.load(*part, data, limit=limit)
    if tuple(loaded.class_names) != tuple(class_names):
        raise DataError(
            f"{part[0]} ({part[1]}) now has the classes {', '.join(loaded.class_names)}, the run "
            f"was trained on {', '.join(class_names)}; analyse it with the data it trained on."
        )
    return loaded


def analyze_run(
    workdir: str, *, max_images: int = 500, seed: int = 0, num_devices: int = 0
) -> dict:
    """Features of up to ``max_images`` source and as many target images at the run's newest
    checkpoint, their t-SNE and the proxy A-distance, written into ``workdir``
    (:data:`ANALYSIS_FILE`, then the :data:`FIGURES` drawn from it); returns what
    ``analysis.json`` holds."""
    from jaxdann.inference import load_run
    from jaxdann.training.run_folder import write_json

    if max_images < 2:
        raise ConfigError(f"--max-images {max_images}: at least 2 are needed.")
    run = load_run(workdir, num_devices=num_devices)
    (source_images, source_labels), (target_images, target_labels) = _analysis_data(
        run, max_images, seed
    )
    source = run.features(source_images, preprocessed=True)
    target = run.features(target_images, preprocessed=True)
    points = tsne_embedding(np.concatenate([source, target]), seed=seed)
    analysis = {
        "checkpoint_epoch": run.epoch,
        "adaptation": str(run.config.adaptation),
        "source": str(run.config.data.source),
        "target": str(run.config.data.target),
        "images_per_domain": len(source),
        "feature_width": int(source.shape[1]),
        "seed": seed,
        **proxy_a_distance(source, target, seed=seed),
        "figures": dict(FIGURES),
        "tsne": {
            "class_names": list(run.class_names),
            "source": _points(points[: len(source)], source_labels),
            "target": _points(points[len(source) :], target_labels),
        },
    }
    write_json(os.path.join(workdir, ANALYSIS_FILE), analysis)
    draw_figures(analysis, workdir)
    return analysis


def _points(points: np.ndarray, labels: np.ndarray) -> dict:
    return {"points": points.round(4).tolist(), "labels": labels.astype(int).tolist()}


def draw_figures(analysis: dict, workdir: str) -> None:
    """The t-SNE figures of an ``analysis.json`` (:func:`analyze_run`'s), into ``workdir``."""
    tsne = analysis["tsne"]
    parts = (tsne["source"], tsne["target"])
    points = np.concatenate([np.asarray(part["points"], float).reshape(-1, 2) for part in parts])
    labels = np.concatenate([np.asarray(part["labels"], int) for part in parts])
    domains = np.repeat([0, 1], [len(part["labels"]) for part in parts])
    names = (analysis["source"], analysis["target"])
    for colour_by, name in FIGURES.items():
        title = f"{names[0]} -> {names[1]}, {analysis['adaptation']}: t-SNE by {colour_by}"
        temporary = os.path.join(workdir, f".{name}.tmp.png")  # never half a PNG in the folder
        plot_tsne(
            points,
            domains,
            labels,
            temporary,
            colour_by=colour_by,
            domain_names=names,
            class_names=tsne["class_names"],
            title=title,
        )
        os.replace(temporary, os.path.join(workdir, name))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.analyze",
        description="t-SNE figures and the proxy A-distance of a run's source and target features.",
        epilog="exit status: 0 done; 1 unreadable data or run files; 2 bad arguments.",
    )
    parser.add_argument("--run", required=True, help="the run folder (python -m jaxdann.train's)")
    parser.add_argument("--max-images", type=int, default=500, help="per domain (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the picks and t-SNE")
    parser.add_argument("--num-devices", type=int, default=0, help="devices to use (0: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)  # argparse exits 2 on a bad flag
    try:
        analysis = analyze_run(
            arguments.run,
            max_images=arguments.max_images,
            seed=arguments.seed,
            num_devices=arguments.num_devices,
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    print(
        f"proxy A-distance {analysis['proxy_a_distance']:.3f} (domain classifier error "
        f"{analysis['domain_classifier_error']:.3f} on {analysis['held_out_rows']} held-out "
        f"features), {analysis['images_per_domain']} images per domain, checkpoint after epoch "
        f"{analysis['checkpoint_epoch']}; written to {os.path.join(arguments.run, ANALYSIS_FILE)}, "
        f"{', '.join(FIGURES.values())}"
    )
    return 0


if __name__ == "__main__":
    config_lib.exit_process(main())

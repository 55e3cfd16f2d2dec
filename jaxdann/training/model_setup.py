"""From a config to a network, its method and its first parameters.

The network is the backbone's features (``model.arch``), an optional bottleneck
(``model.bottleneck``), the label classifier and the heads the method adds
(``adaptation``). Its first parameters are a random initialisation, then the converted
weights ``model.pretrained`` names, then the method's own adjustment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdann.errors import ConversionError
from jaxdann.methods import Method, get_method
from jaxdann.models.backbones import BACKBONES
from jaxdann.models.heads import Bottleneck, MLPHead
from jaxdann.models.layers import compute_dtype
from jaxdann.models.network import Network

__all__ = ["build_from_config", "initial_variables", "read_pretrained"]


def build_from_config(config, num_classes: int, *, mean=0.0, std=1.0) -> tuple[Network, Method]:
    """The network and the method object a config describes (``mean``/``std``: the data's
    normalisation, which the method applies to uint8 batches)."""
    backbone = BACKBONES.get(config.model.arch)
    method_class = get_method(config.adaptation)
    dtype = compute_dtype(config)
    parts = [("features", backbone.features(config.model, dtype))]
    if method_class.bottleneck_width(config) > 0:
        parts.append(("bottleneck", Bottleneck(method_class.bottleneck_width(config), dtype)))
    rate = float(config.model.dropout_rate)
    parts.append(("classifier", MLPHead(backbone.classifier_hidden, num_classes, rate, dtype)))
    parts.extend(method_class.heads(config, backbone, num_classes).items())
    network = Network(tuple(parts))
    return network, method_class(config, network, mean=mean, std=std)


def _shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def read_pretrained(config) -> dict | None:
    """The converted weights ``model.pretrained`` names as ``{"params", "batch_stats"}``
    (``None`` for random init; ``batch_stats`` empty for a backbone without BatchNorm).

    Read before any data, so a missing or unreadable file is one sentence, not a wait.
    """
    pretrained = str(config.model.pretrained)
    if pretrained.lower() in ("", "none"):
        return None
    from jaxdann.convert import load_params

    loaded = load_params(pretrained)
    # AlexNet files hold the params tree itself; files with statistics hold both collections.
    variables = loaded if "params" in loaded else {"params": loaded}
    variables.setdefault("batch_stats", {})
    for part in ("features", "classifier"):
        if not isinstance(variables["params"], Mapping) or part not in variables["params"]:
            raise ConversionError(f"{pretrained} has no {part!r} parameters.")
    return variables


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _random_variables(
    network: Network, image_shape: tuple[int, ...], head_inputs: Callable, rng: jax.Array
) -> Any:
    """Flax init, compiled once per process for each network and image size (networks compare
    by their parts): the runs of a sweep reuse it instead of compiling again."""
    return network.init(rng, image_shape, head_inputs)


def _differences(given, expected) -> str:
    """The first few paths whose shapes differ between two trees, for an error message."""
    given, expected = _shapes(given), _shapes(expected)
    paths = sorted(set(given) | set(expected))
    wrong = [f"{p} {given.get(p, 'absent')} vs {expected.get(p, 'absent')}" for p in paths]
    wrong = [w for w, p in zip(wrong, paths, strict=True) if given.get(p) != expected.get(p)]
    more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
    return ", ".join(wrong[:5]) + more


def _merge_pretrained(variables: dict, pretrained: dict, config) -> dict:
    """``features`` (parameters and statistics) and the classifier's hidden layers from
    ``pretrained``; its output layer only if the class count matches (else it stays fresh, as
    the seed replaces AlexNet's 1000-way layer)."""
    params = variables["params"]
    classifier = dict(params["classifier"])
    for layer, value in pretrained["params"]["classifier"].items():
        if layer == "output" and _shapes(value) != _shapes(classifier.get(layer)):
            continue
        classifier[layer] = value
    merged = {"features": pretrained["params"]["features"], "classifier": classifier}
    checks = [(part, value, params[part]) for part, value in merged.items()]
    stats = variables.get("batch_stats", {})
    if "features" in stats or "features" in pretrained["batch_stats"]:
        given = pretrained["batch_stats"].get("features", {})
        checks.append(("features statistics", given, stats.get("features", {})))
    for what, value, expected in checks:
        if _shapes(value) != _shapes(expected):
            raise ConversionError(
                f"{config.model.pretrained}: its {what} do not fit model.arch="
                f"{config.model.arch} (file vs model: {_differences(value, expected)}); convert "
                f"the weights with `python -m jaxdann.convert --arch {config.model.arch}`."
            )
    result = {**variables, "params": {**params, **merged}}
    if "features" in stats:
        result["batch_stats"] = {**stats, "features": pretrained["batch_stats"]["features"]}
    return result


def initial_variables(
    network: Network,
    method: Method,
    image_shape: tuple[int, int, int],
    rng: jax.Array,
    pretrained: dict | None = None,
) -> tuple[dict, dict]:
    """``(params, model_state)`` a run starts from: random, then ``pretrained`` (from
    :func:`read_pretrained`), then ``method.init_params``."""
    head_inputs = type(method).head_inputs
    variables = dict(_random_variables(network, tuple(image_shape), head_inputs, rng))
    if pretrained is not None:
        variables = _merge_pretrained(variables, pretrained, method.config)
    params = method.init_params(dict(variables.pop("params")))
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, variables)

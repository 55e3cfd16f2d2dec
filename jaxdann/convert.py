"""torchvision AlexNet and ResNet weights -> Flax variables, and the command that writes them.

python -m jaxdann.convert --torch-weights alexnet-owt-7be5be79.pth \
    --output weights/alexnet_imagenet.msgpack
python -m jaxdann.convert --output weights/alexnet_imagenet.msgpack   # asks torchvision (network)
python -m jaxdann.convert --arch resnet50 --output weights/resnet50_imagenet.msgpack
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

import flax.serialization
import jax
import numpy as np

from jaxdann.data.image_cache import atomic_write
from jaxdann.errors import ConfigError, ConversionError, MissingFile, exit_code, is_user_error
from jaxdann.models.alexnet import AlexNet
from jaxdann.models.resnet import RESNET_STAGES, ResNet

__all__ = [
    "ARCHS",
    "TORCH_TO_FLAX",
    "ConversionError",
    "torchvision_to_flax",
    "resnet_to_flax",
    "save_params",
    "load_params",
    "main",
]

# torchvision ``alexnet`` module prefix -> (Flax path, layer kind).
TORCH_TO_FLAX: dict[str, tuple[tuple[str, ...], str]] = {
    "features.0": (("features", "conv1"), "conv"),
    "features.3": (("features", "conv2"), "conv"),
    "features.6": (("features", "conv3"), "conv"),
    "features.8": (("features", "conv4"), "conv"),
    "features.10": (("features", "conv5"), "conv"),
    "classifier.1": (("classifier", "hidden_0"), "first_linear"),
    "classifier.4": (("classifier", "hidden_1"), "linear"),
    "classifier.6": (("classifier", "output"), "linear"),
}
ARCHS = ("alexnet", *RESNET_STAGES)
# The feature map entering the first linear layer: 256 channels of 6x6.
_POOLED_CHANNELS, _POOLED_SIZE = 256, 6


def _as_numpy(value: Any, key: str) -> np.ndarray:
    """``state_dict[key]`` as a float32 numpy copy (numpy views of torch tensors would change
    when torch trains them in place); bfloat16 tensors pass through float32, which numpy has."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    try:
        return np.array(value, dtype=np.float32, copy=True)
    except (TypeError, ValueError):
        raise ConversionError(
            f"{key} holds a {type(value).__name__}, not an array of numbers"
        ) from None


def _convert_weight(weight: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # OIHW -> HWIO
        return weight.transpose(2, 3, 1, 0)
    if kind == "first_linear":
        # torch flattens the pooled map as C*H*W; the Flax model flattens NHWC as H*W*C.
        out_features = weight.shape[0]
        weight = weight.reshape(out_features, _POOLED_CHANNELS, _POOLED_SIZE, _POOLED_SIZE)
        return weight.transpose(2, 3, 1, 0).reshape(-1, out_features)
    return weight.T  # linear: (out, in) -> (in, out)


def _alexnet_shapes(num_classes: int) -> dict[str, tuple[tuple, tuple]]:
    """``{torch prefix: (weight shape, bias shape)}`` of ``AlexNet(num_classes)``, in torch's
    layouts."""
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    model = AlexNet(num_classes)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)["params"]
    shapes = {}
    for prefix, ((part, layer), _) in TORCH_TO_FLAX.items():
        leaves = params[part][layer]
        shapes[prefix] = (_torch_shape(leaves["kernel"].shape), leaves["bias"].shape)
    return shapes


def _class_count(state_dict: Mapping[str, Any], output_key: str) -> int:
    """The class count of the output layer's 2-d weight at ``output_key`` (1000 without one:
    its absence is then reported with the other keys)."""
    weight = state_dict.get(output_key)
    return int(np.shape(weight)[0]) if np.ndim(weight) == 2 else 1000


def _state_keys(state_dict: Mapping[str, Any]) -> set[str]:
    """The state dict's keys as text (a key of another type is reported as unexpected)."""
    return {str(key) for key in state_dict}


def torchvision_to_flax(state_dict: Mapping[str, Any], arch: str = "alexnet") -> dict[str, Any]:
    """Converts a torchvision state dict (torch tensors or numpy arrays) of model ``arch``.

    ``alexnet``: ``{"features": {...}, "classifier": {...}}``, the params of
    :class:`jaxdann.models.AlexNet` (which holds nothing else). ``resnet18``, ``resnet34``,
    ``resnet50``: ``{"params": {"features", "classifier"}, "batch_stats": {"features"}}`` for
    :class:`jaxdann.models.ResNet` (torch's ``fc`` is the classifier's ``output``). Every array
    is a float32 numpy copy. Raises :class:`ConversionError` listing every missing key,
    unexpected key and bad shape.
    """
    if arch in RESNET_STAGES:
        return resnet_to_flax(state_dict, arch)
    if arch != "alexnet":
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}.")
    expected = {f"{prefix}.{leaf}" for prefix in TORCH_TO_FLAX for leaf in ("weight", "bias")}
    given = _state_keys(state_dict)
    shapes = _alexnet_shapes(_class_count(state_dict, "classifier.6.weight"))
    problems = []
    if missing := sorted(expected - given):
        problems.append("missing keys: " + ", ".join(missing))
    if extra := sorted(given - expected):
        problems.append("unexpected keys: " + ", ".join(extra))

    params: dict[str, Any] = {}
    for prefix, (path, kind) in TORCH_TO_FLAX.items():
        if f"{prefix}.weight" not in given or f"{prefix}.bias" not in given:
            continue
        weight = _as_numpy(state_dict[f"{prefix}.weight"], f"{prefix}.weight")
        bias = _as_numpy(state_dict[f"{prefix}.bias"], f"{prefix}.bias")
        weight_shape, bias_shape = shapes[prefix]
        if weight.shape != weight_shape:
            problems.append(f"{prefix}.weight has shape {weight.shape}, expected {weight_shape}")
            continue
        if bias.shape != bias_shape:
            problems.append(f"{prefix}.bias has shape {bias.shape}, expected {bias_shape}")
            continue
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = {"kernel": _convert_weight(weight, kind), "bias": bias}

    if problems:
        raise ConversionError("not a torchvision AlexNet state dict: " + "; ".join(problems))
    return params


# Flax leaf -> torch leaf; Flax module name -> torch module path (ResNet).
_RESNET_LEAVES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_RESNET_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def _resnet_torch_key(path: tuple[str, ...]) -> str:
    """``("features", "layer1_0", "downsample_bn", "scale")`` -> ``layer1.0.downsample.1.weight``;
    the classifier's ``output`` is torch's ``fc``."""
    part, *modules, leaf = path
    if part == "classifier":
        names = ["fc"]
    else:
        names = [_RESNET_MODULES.get(m, m.replace("_", ".")) for m in modules]
    return ".".join([*names, _RESNET_LEAVES[leaf]])


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # conv OIHW -> HWIO
        value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:  # linear (out, in) -> (in, out)
        value = value.T
    return np.ascontiguousarray(value)


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        return tuple(flax_shape[i] for i in (3, 2, 0, 1))
    return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def _resnet_template(arch: str, num_classes: int) -> dict[str, dict[str, tuple[str, tuple]]]:
    """``{collection: {torch key: (Flax path, Flax shape)}}`` of ``ResNet(arch, num_classes)``."""
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
    model = ResNet(arch, num_classes)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    template: dict[str, dict[str, tuple[str, tuple]]] = {}
    for collection, tree in variables.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(key.key for key in path)
            template.setdefault(collection, {})[_resnet_torch_key(names)] = (names, leaf.shape)
    return template


def resnet_to_flax(state_dict: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """A ``torchvision.models.resnet18/34/50`` state dict -> ``{"params", "batch_stats"}``
    (see :func:`torchvision_to_flax`). The class count is read from ``fc.weight``; BatchNorm's
    ``num_batches_tracked`` counters are accepted and dropped (momentum does not use them)."""
    template = _resnet_template(arch, _class_count(state_dict, "fc.weight"))
    expected = {key for keys in template.values() for key in keys}
    counters = {k.rsplit(".", 1)[0] + ".num_batches_tracked" for k in expected if "running" in k}
    given = _state_keys(state_dict)
    problems = []
    if missing := sorted(expected - given):
        problems.append("missing keys: " + ", ".join(missing))
    if extra := sorted(given - expected - counters):
        problems.append("unexpected keys: " + ", ".join(extra))
    variables: dict[str, Any] = {}
    for collection, keys in template.items():
        for key, (path, shape) in keys.items():
            if key not in given:
                continue
            value = _as_numpy(state_dict[key], key)
            if value.shape != _torch_shape(shape):
                problems.append(f"{key} has shape {value.shape}, expected {_torch_shape(shape)}")
                continue
            node = variables.setdefault(collection, {})
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = _to_flax_layout(value)
    if problems:
        raise ConversionError(f"not a torchvision {arch} state dict: " + "; ".join(problems))
    return variables


def save_params(params: Mapping[str, Any], path: str) -> None:
    """Writes params as msgpack (atomically: a half-written file never replaces a good one)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = flax.serialization.msgpack_serialize(_to_numpy_tree(params))
    atomic_write(path, lambda handle: handle.write(payload))  # no temporary file left on failure


def load_params(path: str) -> dict[str, Any]:
    """Reads a file written by :func:`save_params` (what ``model.pretrained`` points at)."""
    if os.path.isdir(path):
        raise ConversionError(
            f"weights file {path} is a folder; name a .msgpack file written by "
            "`python -m jaxdann.convert`, or set --config.model.pretrained=none for random init."
        )
    if not os.path.isfile(path):
        shown = path if os.path.isabs(path) else f"{path} ({os.path.abspath(path)})"
        raise MissingFile(
            f"weights file {shown} does not exist; convert ImageNet weights with "
            f"`python -m jaxdann.convert [--arch ARCH] --output {path}` (see weights/README.md) "
            "or set --config.model.pretrained=none for random init."
        )
    with open(path, "rb") as f:
        try:
            loaded = flax.serialization.msgpack_restore(f.read())
        except Exception as error:  # msgpack raises several unrelated types
            raise ConversionError(
                f"{path} is not a jaxdann weights file ({type(error).__name__}); "
                "write one with `python -m jaxdann.convert`."
            ) from error
    if not isinstance(loaded, Mapping):  # valid msgpack, but a number or a list
        raise ConversionError(
            f"{path} is not a jaxdann weights file (it holds a {type(loaded).__name__}); "
            "write one with `python -m jaxdann.convert`."
        )
    return loaded


def _to_numpy_tree(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _torchvision_weights(arch: str):
    """torchvision's ImageNet weights for ``arch``: the original release (``IMAGENET1K_V1``),
    the one TLlib's and DomainBed's ResNet-50 results start from."""
    try:
        from torchvision import models
    except ImportError as error:
        raise ConfigError(
            "jaxdann.convert needs torchvision: pip install 'jaxdann[convert]'"
        ) from error
    enum = {"alexnet": "AlexNet_Weights", "resnet18": "ResNet18_Weights"}.get(arch)
    enum = enum or {"resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}[arch]
    return getattr(models, enum).IMAGENET1K_V1


def _read_pth(torch, torch_weights: str, arch: str) -> Mapping[str, Any]:
    if not os.path.isfile(torch_weights):
        what = "is a folder" if os.path.isdir(torch_weights) else "does not exist"
        raise ConfigError(f"--torch-weights {torch_weights} {what}; name a .pth file.")
    try:
        state = torch.load(torch_weights, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip and tensor errors all differ in type
        # torch's own message suggests weights_only=False (running the file's code) and may
        # hold terminal colour codes: only the kind of failure is shown.
        raise ConversionError(
            f"--torch-weights {torch_weights}: not a state_dict file torch can read safely "
            f"({type(error).__name__}); pass torchvision's {arch} .pth or a file written by "
            "torch.save(model.state_dict(), PATH)."
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _load_torch_state_dict(torch_weights: str | None, arch: str = "alexnet") -> Mapping[str, Any]:
    try:
        import torch
    except ImportError as error:
        raise ConfigError(
            "jaxdann.convert needs torch: pip install 'jaxdann[convert]' (torch, torchvision)"
        ) from error
    if torch_weights is not None:
        return _read_pth(torch, torch_weights, arch)
    weights = _torchvision_weights(arch)
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # URLError, socket errors, HTTP errors...
        raise ConversionError(
            f"could not download {weights.url} ({type(error).__name__}); download that "
            "file on a machine with network access and run `python -m jaxdann.convert "
            f"--arch {arch} --torch-weights {os.path.basename(weights.url)} --output PATH`."
        ) from error


def _convert(state_dict, source: str, arch: str = "alexnet") -> dict[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise ConversionError(
            f"{source} holds a {type(state_dict).__name__}, not a state_dict; save one with "
            "torch.save(model.state_dict(), PATH)."
        )
    try:
        return torchvision_to_flax(state_dict, arch)
    except ConversionError as error:
        raise ConversionError(f"{source}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.convert",
        description="Convert torchvision AlexNet or ResNet weights into a jaxdann weights file.",
    )
    parser.add_argument("--arch", choices=ARCHS, default="alexnet", help="default: %(default)s")
    parser.add_argument("--torch-weights", help="a torchvision .pth of --arch (default: download)")
    parser.add_argument(
        "--output",
        help="the jaxdann weights file to write (default: weights/ARCH_imagenet.msgpack; "
        "weights/alexnet_imagenet.msgpack is what model.pretrained reads by default)",
    )
    args = parser.parse_args(argv)
    output = args.output or f"weights/{args.arch}_imagenet.msgpack"
    try:
        state_dict = _load_torch_state_dict(args.torch_weights, args.arch)
        converted = _convert(state_dict, args.torch_weights or "the downloaded file", args.arch)
        save_params(converted, output)
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    params = converted.get("params", converted)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    statistics = sum(leaf.size for leaf in jax.tree_util.tree_leaves(converted.get("batch_stats")))
    extra = f", {statistics:,} BatchNorm statistics" if statistics else ""
    print(f"wrote {output} ({count:,} parameters{extra})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

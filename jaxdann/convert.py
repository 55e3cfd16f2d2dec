"""torchvision AlexNet weights -> Flax params, and the command that writes them to ``weights/``.

python -m jaxdann.convert --torch-weights alexnet-owt-7be5be79.pth \
    --output weights/alexnet_imagenet.msgpack
python -m jaxdann.convert --output weights/alexnet_imagenet.msgpack   # asks torchvision (network)
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

from jaxdann.errors import ConfigError, ConversionError, exit_code, is_user_error

__all__ = [
    "TORCH_TO_FLAX",
    "ConversionError",
    "torchvision_to_flax",
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
# The feature map entering the first linear layer: 256 channels of 6x6.
_POOLED_CHANNELS, _POOLED_SIZE = 256, 6


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    # A copy: numpy views of torch tensors would change when torch trains them in place.
    return np.array(value, dtype=np.float32, copy=True)


def _convert_weight(weight: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # OIHW -> HWIO
        return weight.transpose(2, 3, 1, 0)
    if kind == "first_linear":
        # torch flattens the pooled map as C*H*W; the Flax model flattens NHWC as H*W*C.
        out_features = weight.shape[0]
        weight = weight.reshape(out_features, _POOLED_CHANNELS, _POOLED_SIZE, _POOLED_SIZE)
        return weight.transpose(2, 3, 1, 0).reshape(-1, out_features)
    return weight.T  # linear: (out, in) -> (in, out)


def _expected_weight_shape(kind: str, weight: np.ndarray) -> str | None:
    if kind == "conv" and weight.ndim != 4:
        return "a 4-d conv weight (O, I, H, W)"
    if kind in ("linear", "first_linear") and weight.ndim != 2:
        return "a 2-d linear weight (out, in)"
    if kind == "first_linear" and weight.shape[1] != _POOLED_CHANNELS * _POOLED_SIZE**2:
        return f"in_features {_POOLED_CHANNELS * _POOLED_SIZE**2} (256 x 6 x 6)"
    return None


def torchvision_to_flax(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Converts a ``torchvision.models.alexnet`` state dict (torch tensors or numpy arrays).

    Returns ``{"features": {...}, "classifier": {...}}`` for :class:`jaxdann.models.AlexNet`.
    Raises :class:`ConversionError` listing every missing key, unexpected key and bad shape.
    """
    expected = {f"{prefix}.{leaf}" for prefix in TORCH_TO_FLAX for leaf in ("weight", "bias")}
    given = set(state_dict)
    problems = []
    if missing := sorted(expected - given):
        problems.append("missing keys: " + ", ".join(missing))
    if extra := sorted(given - expected):
        problems.append("unexpected keys: " + ", ".join(extra))

    params: dict[str, Any] = {}
    for prefix, (path, kind) in TORCH_TO_FLAX.items():
        if f"{prefix}.weight" not in given or f"{prefix}.bias" not in given:
            continue
        weight = _as_numpy(state_dict[f"{prefix}.weight"])
        bias = _as_numpy(state_dict[f"{prefix}.bias"])
        if wrong := _expected_weight_shape(kind, weight):
            problems.append(f"{prefix}.weight has shape {weight.shape}, expected {wrong}")
            continue
        if bias.shape != (weight.shape[0],):
            problems.append(f"{prefix}.bias has shape {bias.shape}, expected ({weight.shape[0]},)")
            continue
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = {"kernel": _convert_weight(weight, kind), "bias": bias}

    if not problems:
        problems += _check_chain(params)
    if problems:
        raise ConversionError("not a torchvision AlexNet state dict: " + "; ".join(problems))
    return params


def _check_chain(params: dict[str, Any]) -> list[str]:
    """Each layer's input width must equal the previous layer's output width."""
    problems = []
    layers = [(p, k) for p, k in TORCH_TO_FLAX.values()]
    previous_out = 3
    for (path, kind), prefix in zip(layers, TORCH_TO_FLAX, strict=True):
        kernel = params[path[0]][path[1]]["kernel"]
        fan_in = kernel.shape[2] if kind == "conv" else kernel.shape[0]
        if kind == "first_linear":
            previous_out *= _POOLED_SIZE**2
        if fan_in != previous_out:
            problems.append(
                f"{prefix}.weight takes {fan_in} inputs but the layer before gives {previous_out}"
            )
        previous_out = kernel.shape[-1]
    return problems


def save_params(params: Mapping[str, Any], path: str) -> None:
    """Writes params as msgpack (atomically: a half-written file never replaces a good one)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(_to_numpy_tree(params)))
    os.replace(tmp, path)


def load_params(path: str) -> dict[str, Any]:
    """Reads a file written by :func:`save_params` (what ``model.pretrained`` points at)."""
    if os.path.isdir(path):
        raise ConversionError(
            f"weights file {path} is a folder; name a .msgpack file written by "
            "`python -m jaxdann.convert`, or set --config.model.pretrained=none for random init."
        )
    if not os.path.isfile(path):
        shown = path if os.path.isabs(path) else f"{path} ({os.path.abspath(path)})"
        raise FileNotFoundError(
            f"weights file {shown} does not exist; convert the ImageNet AlexNet with "
            f"`python -m jaxdann.convert --output {path}` (see weights/README.md) "
            "or set --config.model.pretrained=none for random init."
        )
    with open(path, "rb") as f:
        try:
            return flax.serialization.msgpack_restore(f.read())
        except Exception as error:  # msgpack raises several unrelated types
            raise ConversionError(
                f"{path} is not a jaxdann weights file ({type(error).__name__}); "
                "write one with `python -m jaxdann.convert`."
            ) from error


def _to_numpy_tree(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _load_torch_state_dict(torch_weights: str | None) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError as error:
        raise ConfigError(
            "jaxdann.convert needs torch: pip install 'jaxdann[convert]' (torch, torchvision)"
        ) from error
    if torch_weights is not None:
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
                f"({type(error).__name__}); pass torchvision's alexnet-owt-7be5be79.pth or a "
                "file written by torch.save(model.state_dict(), PATH)."
            ) from None
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        return state
    try:
        from torchvision.models import AlexNet_Weights
    except ImportError as error:
        raise ConfigError(
            "jaxdann.convert needs torchvision: pip install 'jaxdann[convert]'"
        ) from error
    weights = AlexNet_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # URLError, socket errors, HTTP errors...
        raise ConversionError(
            f"could not download {weights.url} ({type(error).__name__}); download that "
            "file on a machine with network access and run "
            "`python -m jaxdann.convert --torch-weights alexnet-owt-7be5be79.pth --output PATH`."
        ) from error


def _convert(state_dict, source: str) -> dict[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise ConversionError(
            f"{source} holds a {type(state_dict).__name__}, not a state_dict; save one with "
            "torch.save(model.state_dict(), PATH)."
        )
    try:
        return torchvision_to_flax(state_dict)
    except ConversionError as error:
        raise ConversionError(f"{source}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.convert",
        description="Convert torchvision AlexNet weights into a jaxdann weights file.",
    )
    parser.add_argument("--torch-weights", help="a torchvision alexnet .pth (default: download)")
    parser.add_argument(
        "--output",
        default="weights/alexnet_imagenet.msgpack",
        help="the jaxdann weights file to write (default: %(default)s, what "
        "model.pretrained reads by default)",
    )
    args = parser.parse_args(argv)
    try:
        state_dict = _load_torch_state_dict(args.torch_weights)
        params = _convert(state_dict, args.torch_weights or "the downloaded file")
        save_params(params, args.output)
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    print(f"wrote {args.output} ({count:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each AlexNet convolution alone, jax against torch: forward, input gradient, filter gradient.

    python benchmarks/conv_layers.py [--batch-size 32] [--repeats 5] [--xla-defaults]

Where the fused step's time goes on a CPU, layer by layer. Each piece is jitted alone (jax) or
called through ``torch.ops.aten.convolution_backward`` (torch, the kernels its autograd uses), on
the same shapes and device, median of ``--repeats`` after one warm-up. The fused train step needs
every piece except conv1's input gradient. The last line is one JSON object: per layer and piece,
milliseconds for both and the ratio torch / jax (above 1: jax is faster). jax compiles with
jaxdann's XLA options (``jaxdann.training.parallel.compiler_options``: on CPU, XLA's own
convolutions rather than YNNPACK's), or with XLA's defaults under ``--xla-defaults``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np

# torchvision AlexNet's convolutions: (name, input size, in channels, out channels, kernel, stride,
# padding).
LAYERS = (
    ("conv1", 224, 3, 64, 11, 4, 2),
    ("conv2", 27, 64, 192, 5, 1, 2),
    ("conv3", 13, 192, 384, 3, 1, 1),
    ("conv4", 13, 384, 256, 3, 1, 1),
    ("conv5", 13, 256, 256, 3, 1, 1),
)
PIECES = ("forward", "input_gradient", "filter_gradient")


def median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def jax_pieces(x, w, stride, padding, repeats, compiler_options):
    import jax
    import jax.numpy as jnp

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x,
            w,
            (stride, stride),
            [(padding, padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    x, w = jnp.asarray(x), jnp.asarray(w)
    g = jnp.ones(jax.eval_shape(conv, x, w).shape, jnp.float32)
    jit = functools.partial(jax.jit, compiler_options=compiler_options)
    functions = {
        "forward": jit(conv),
        "input_gradient": jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0]),
        "filter_gradient": jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1]),
    }
    args = {"forward": (x, w), "input_gradient": (x, w, g), "filter_gradient": (x, w, g)}
    return {
        piece: median_ms(lambda f=f, a=args[piece]: f(*a).block_until_ready(), repeats)
        for piece, f in functions.items()
    }


def torch_pieces(x, w, stride, padding, repeats):
    import torch

    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    w = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    with torch.no_grad():
        g = torch.ones_like(torch.nn.functional.conv2d(x, w, stride=stride, padding=padding))

        def backward(mask):
            return torch.ops.aten.convolution_backward(
                g, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, mask
            )

        return {
            "forward": median_ms(
                lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=padding), repeats
            ),
            "input_gradient": median_ms(lambda: backward([True, False, False]), repeats),
            "filter_gradient": median_ms(lambda: backward([False, True, False]), repeats),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per convolution")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument(
        "--xla-defaults", action="store_true", help="XLA's default options, not jaxdann's"
    )
    args = parser.parse_args()
    import torch

    from jaxdann.training import parallel

    options = {} if args.xla_defaults else parallel.compiler_options()

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    report = {
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "compiler_options": options,
        "layers": {},
    }
    for name, size, cin, cout, kernel, stride, padding in LAYERS:
        x = rng.standard_normal((args.batch_size, size, size, cin)).astype(np.float32)
        w = (rng.standard_normal((kernel, kernel, cin, cout)) * 0.01).astype(np.float32)
        jax_ms = jax_pieces(x, w, stride, padding, args.repeats, options)
        torch_ms = torch_pieces(x, w, stride, padding, args.repeats)
        report["layers"][name] = {
            piece: {
                "jax_ms": round(jax_ms[piece], 1),
                "torch_ms": round(torch_ms[piece], 1),
                "torch_over_jax": round(torch_ms[piece] / jax_ms[piece], 2),
            }
            for piece in PIECES
        }
        cells = "  ".join(
            f"{piece} {jax_ms[piece]:.0f} vs {torch_ms[piece]:.0f} ms" for piece in PIECES
        )
        print(f"{name} (jax vs torch): {cells}", flush=True)
    needed = [
        (name, piece)
        for name in report["layers"]
        for piece in PIECES
        if not (name == "conv1" and piece == "input_gradient")
    ]
    for side in ("jax_ms", "torch_ms"):
        report[f"step_pieces_{side}"] = round(
            sum(report["layers"][name][piece][side] for name, piece in needed), 1
        )
    report["step_pieces_torch_over_jax"] = round(
        report["step_pieces_torch_ms"] / report["step_pieces_jax_ms"], 2
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()

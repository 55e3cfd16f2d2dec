"""Times one training step of every method, relative to DANN's, and PyTorch eager CDAN+E and MCD.

    python benchmarks/method_steps.py [--arch small_cnn|alexnet] [--batch-size B]
        [--image-size S] [--steps N] [--methods none,dann,...] [--compare-torch [--interleave]]

Every jaxdann step is the jitted step training runs (``make_train_step`` with the config's
optimizer), built from the demo config (``--arch small_cnn``, 10 classes, no dropout) or the
base config (``--arch alexnet``, 7 classes, dropout 0.5), on B source + B target uint8 images.
``--compare-torch`` also times a PyTorch eager step written as TLlib's examples write them
(``examples/domain_adaptation/image_classification/cdan.py`` and ``mcd.py``), on the same
network shapes, batch and threads, and prints jaxdann's speed-up over each. The torch CDAN+E
step: one forward over source + target, the randomized multilinear map (above 4096 dimensions)
through the reversal layer into the discriminator, the entropy-weighted loss, one backward,
one SGD step. The torch MCD step: stage A (features and both classifiers on the source loss),
stage B (classifiers: source loss minus the target discrepancy), ``num_k`` stage C updates of
the features on the discrepancy, each its own forward and backward, as TLlib's. With
``--interleave`` a jaxdann step and a torch step of CDAN+E and MCD alternate, each timed alone,
so both see the same load on a shared machine (medians, minimums and the load average around
each in the JSON's ``interleaved``). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdann import config as config_lib  # noqa: E402
from jaxdann.methods import METHODS  # noqa: E402
from jaxdann.models.backbones import BACKBONES  # noqa: E402
from jaxdann.training import parallel  # noqa: E402
from jaxdann.training.model_setup import build_from_config, initial_variables  # noqa: E402
from jaxdann.training.optim import optimizer_factories  # noqa: E402
from jaxdann.training.step import TrainState, make_course, make_train_step  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def method_config(arch: str, adaptation: str):
    """The demo config (small CNN, 10 classes) or the base one (AlexNet, 7), random init."""
    config = config_lib.demo_config() if arch == "small_cnn" else config_lib.base_config()
    config.adaptation = adaptation
    config.model.arch = arch
    config.model.pretrained = "none"
    config_lib.validate(config)
    return config


def _batch(batch_size: int, image_size: int, num_classes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size, 3)
    ones = np.ones(batch_size, np.float32)
    return {
        "source_images": rng.integers(0, 256, shape, dtype=np.uint8),
        "source_labels": rng.integers(0, num_classes, batch_size).astype(np.int32),
        "source_mask": ones,
        "target_images": rng.integers(0, 256, shape, dtype=np.uint8),
        "target_mask": ones,
    }


def jax_method_step(arch, adaptation, batch_size, image_size, total_steps):
    """A function that runs one jitted training step of ``adaptation`` and waits for it (the
    state carries over from call to call, donated, as in training)."""
    config = method_config(arch, adaptation)
    num_classes = 10 if arch == "small_cnn" else 7
    network, method = build_from_config(config, num_classes, mean=MEAN, std=STD)
    params, model_state = initial_variables(
        network, method, (image_size, image_size, 3), jax.random.PRNGKey(0)
    )
    optimizer_for, schedule_for = optimizer_factories(config.optimizer)
    course = make_course(steps_per_epoch=100, total_steps=total_steps)
    learning_rate = jnp.float32(config.optimizer.learning_rate)
    state = [
        TrainState(
            jnp.zeros((), jnp.int32),
            params,
            method.init_optimizer(optimizer_for(learning_rate, course), params),
            learning_rate,
            model_state,
        )
    ]
    step = jax.jit(
        make_train_step(method, optimizer_for, schedule_for),
        donate_argnums=0,
        compiler_options=parallel.compiler_options(),
    )
    batch = jax.device_put(_batch(batch_size, image_size, num_classes))
    key = jax.random.PRNGKey(0)

    def run() -> None:
        state[0], metrics = step(state[0], batch, key, course)
        jax.block_until_ready((state[0], metrics))

    return run


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def time_jax_method(arch, adaptation, batch_size, image_size, steps, warmup=2) -> float:
    """Seconds per jitted training step of ``adaptation`` (median of ``steps``)."""
    run = jax_method_step(arch, adaptation, batch_size, image_size, steps + warmup)
    times = [_timed(run) for _ in range(warmup + steps)][warmup:]
    return float(np.median(times))


def time_interleaved(config, arch, batch_size, image_size, steps, warmup=2) -> dict:
    """jaxdann's and torch's step of ``config.adaptation`` alternating, each timed alone, so
    both see the same load on a shared machine: medians and minimums in seconds."""
    from torch_method_steps import torch_method_step  # benchmarks/, beside this file

    ours = jax_method_step(arch, config.adaptation, batch_size, image_size, steps + warmup)
    theirs = torch_method_step(config, BACKBONES.get(arch), batch_size, image_size)
    times = {"jax": [], "torch": []}
    for index in range(warmup + steps):
        for name, run in (("jax", ours), ("torch", theirs)):
            seconds = _timed(run)
            if index >= warmup:
                times[name].append(seconds)
    return {
        f"{name}_{stat.__name__}_s": float(stat(values))
        for name, values in times.items()
        for stat in (np.median, np.min)
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("small_cnn", "alexnet"), default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="with --compare-torch: alternate jaxdann and torch steps of CDAN+E and MCD (a "
        "shared machine's load then weighs on both alike)",
    )
    args = parser.parse_args(argv)
    names = [name for name in args.methods.split(",") if name]
    if "dann" not in names:
        names.insert(0, "dann")
    shape = (args.arch, args.batch_size, args.image_size, args.steps)
    seconds = {name: time_jax_method(*shape[:1], name, *shape[1:]) for name in names}
    print(
        f"{args.arch}, batch {args.batch_size}+{args.batch_size}, {args.image_size} px, "
        f"{jax.devices()[0].platform}"
    )
    print(f"{'method':<8} {'ms/step':>9} {'x DANN':>7}")
    for name, value in seconds.items():
        print(f"{name:<8} {1e3 * value:9.1f} {value / seconds['dann']:7.2f}")
    result = {
        "arch": args.arch,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "seconds_per_step": seconds,
    }
    if args.compare_torch and args.interleave:
        result["interleaved"] = _compare_interleaved(args.arch, *shape[1:])
    elif args.compare_torch:
        from torch_method_steps import time_torch_method  # benchmarks/, beside this file

        result["torch_seconds_per_step"] = {}
        for name in ("cdan_e", "mcd"):
            config = method_config(args.arch, name)
            torch_s = time_torch_method(config, BACKBONES.get(args.arch), *shape[1:])
            result["torch_seconds_per_step"][name] = torch_s
            ours = seconds.get(name) or time_jax_method(*shape[:1], name, *shape[1:])
            print(
                f"{name}: torch eager {1e3 * torch_s:.1f} ms/step, jaxdann {1e3 * ours:.1f}"
                f" ms/step: jaxdann {torch_s / ours:.2f}x"
            )
    print(json.dumps(result))
    return result


def _compare_interleaved(arch, batch_size, image_size, steps) -> dict:
    """CDAN+E and MCD, jaxdann's step and torch's alternating; the load average around each."""
    results = {}
    for name in ("cdan_e", "mcd"):
        load_before = os.getloadavg()[0]
        times = time_interleaved(method_config(arch, name), arch, batch_size, image_size, steps)
        times |= {"load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
        results[name] = times
        print(
            f"{name}, interleaved: torch eager {1e3 * times['torch_median_s']:.1f} ms/step "
            f"(min {1e3 * times['torch_min_s']:.1f}), jaxdann {1e3 * times['jax_median_s']:.1f}"
            f" (min {1e3 * times['jax_min_s']:.1f}): jaxdann "
            f"{times['torch_median_s'] / times['jax_median_s']:.2f}x of medians, "
            f"{times['torch_min_s'] / times['jax_min_s']:.2f}x of minimums; load average "
            f"{load_before:.1f} -> {times['load_average_after']:.1f}"
        )
    return results


if __name__ == "__main__":
    main()

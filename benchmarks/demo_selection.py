"""Chooses the embedded demo's recipe on a labelled development domain, never on the demo's target.

The seed study picks its hyper-parameters on held-out PACS domains. The demo does the same: each
candidate recipe is trained from grey digits to a labelled development domain (rounds 6-11:
``digits_noise``, the target digit instances on smooth random colour fields; from round 12:
``digits_textured_dev``, the target's blending on other views of the photographs, scored on
held-out source-validation digits), DANN and its matched source-only run, for the development
seeds. The rule, fixed before any run: the candidate with the largest mean
gain (DANN minus source-only final target accuracy on the development domain) wins. Only the
winner then runs on the demo's photo target, for the reporting seeds, DANN and source-only.

    python benchmarks/demo_selection.py --workdir /tmp/demo_selection [--round 12]

Each run is ``python -m jaxdann.train`` in its own folder; finished runs are reused on a rerun.
The last line printed is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# Each round's candidates, fixed before any of its runs. Round 6 tried augmentation, reversal
# strength and domain-head width; round 7 training length (the source loss reaches ~0 by epoch 30
# while the reversal ramp is still rising); round 8 the adversarial objective (on the development
# domain the domain classifier wins, domain loss 0.03, where reversal's gradient vanishes); round 9
# the start (failed runs sit at class loss 2.30 with dead features: the adversarial term grows
# before the classifier has learned anything), with a slower ramp and a faster optimizer; round 10
# a warm-up of 20 source-only epochs for the features before the ramp starts; round 11 gradient
# clipping (round 10 showed the collapse comes when the coefficient nears 1, whatever came before).
# Round 12 moves to a photo-like development domain (``digits_textured_dev``: the target's blending
# on other views of the photographs, scored on held-out source-validation digits), since
# ``digits_noise`` proved a much harder shift than the photo target (source-only 0.16 against 0.46),
# and retries the stable candidates of earlier rounds, the paper's learning-rate annealing and a
# larger unlabelled target set on it. Round 13 takes round 12's two leaders (the largest gain, and
# the best DANN accuracy), their combination and the default to four development seeds, since one
# seed's spread (0.03) is as large as round 12's gains; only its winner runs on the photo target.
ROUNDS = {
    "6": {
        "default": {},
        "shift": {"data.random_crop": "true"},
        "shift_grl0.3": {
            "data.random_crop": "true",
            "grl.schedule": "constant",
            "grl.coefficient": "0.3",
        },
        "shift_ramp0.3": {"data.random_crop": "true", "grl.coefficient": "0.3"},
        "shift_domain500x2": {"data.random_crop": "true", "model.domain_hidden": "500,500"},
    },
    "7": {
        "default": {},
        "epochs120": {"epochs": "120", "optimizer.step_size": "80"},
        "epochs120_batch32": {"epochs": "120", "optimizer.step_size": "80", "batch_size": "32"},
    },
    "8": {
        "default": {},
        "inverted_labels": {"grl.objective": "inverted_labels"},
        "inverted_labels_0.3": {"grl.objective": "inverted_labels", "grl.coefficient": "0.3"},
    },
    "9": {
        "default": {},
        "gamma3": {"grl.gamma": "3"},
        "adam": {"optimizer.name": "adam", "optimizer.learning_rate": "0.001"},
        "adam_gamma3": {
            "optimizer.name": "adam",
            "optimizer.learning_rate": "0.001",
            "grl.gamma": "3",
        },
    },
    "10": {
        "default": {},
        "warmup20": {"grl.warmup_epochs": "20"},
        "warmup20_inverted_labels": {
            "grl.warmup_epochs": "20",
            "grl.objective": "inverted_labels",
        },
    },
    "11": {
        "default": {},
        "clip1": {"optimizer.clip_norm": "1"},
        "clip5": {"optimizer.clip_norm": "5"},
    },
    "12": {
        "default": {},
        "annealed": {"optimizer.schedule": "annealed"},
        "ramp0.3": {"grl.coefficient": "0.3"},
        "constant0.3": {"grl.schedule": "constant", "grl.coefficient": "0.3"},
        "clip5": {"optimizer.clip_norm": "5"},
        "adam": {"optimizer.name": "adam", "optimizer.learning_rate": "0.001"},
        "renderings4": {"data.target_renderings": "4"},
    },
    "13": {
        "default": {},
        "annealed": {"optimizer.schedule": "annealed"},
        "ramp0.3": {"grl.coefficient": "0.3"},
        "annealed_ramp0.3": {"optimizer.schedule": "annealed", "grl.coefficient": "0.3"},
    },
}
# What the rounds' overrides apply to: demo_config() as it was while rounds 6-13 ran (StepLR at 40,
# the reversal ramped to 1), which is what their "default" means and what the runs in a workdir's
# folders used; round 13 chose today's demo_config. A later round against today's demo_config
# needs a fresh --workdir, since folder names do not carry the base recipe.
ROUND_BASE = {"optimizer.schedule": "step", "grl.coefficient": "1.0"}
# The development domain of each round (the rounds before 12 used the colour fields) and, where
# not the two of --dev-seeds' default, its seeds.
DEVELOPMENT = {"12": "digits_textured_dev", "13": "digits_textured_dev"}
DEVELOPMENT_SEEDS = {"13": "0,1,2,3"}
# Keys source-only training never reads (it never sees the target-train set): its matched run
# drops them.
ADAPTATION_ONLY = ("grl.", "model.domain_", "domain_loss_weight", "data.target_renderings")


def source_only_overrides(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if not k.startswith(ADAPTATION_ONLY)}


def source_only_name(overrides: dict) -> str:
    kept = source_only_overrides(overrides)
    return "default" if not kept else "-".join(f"{k}={v}" for k, v in sorted(kept.items()))


def run_overrides(overrides: dict, adaptation: str, target: str, seed: int) -> dict:
    """The ``--config.KEY=VALUE`` pairs of one run: the rounds' base, the candidate, the run."""
    config = dict(ROUND_BASE, **overrides, adaptation=adaptation, seed=str(seed))
    config["data.target"] = target
    return config


def run(workdir: str, overrides: dict) -> dict | None:
    """The run's summary, or None if it stopped on a non-finite loss (the candidate then loses)."""
    summary_path = os.path.join(workdir, "summary.json")
    diverged_path = os.path.join(workdir, "diverged")
    if os.path.exists(diverged_path):
        return None
    if not os.path.exists(summary_path):
        command = [sys.executable, "-m", "jaxdann.train", "--workdir", workdir]
        command.append("--config.checkpoint_every_epochs=0")
        command += [f"--config.{key}={value}" for key, value in overrides.items()]
        print(" ".join(command), flush=True)
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if result.returncode != 0:
            message = result.stderr.decode().strip().splitlines()[-1]
            if "non-finite loss" not in message:
                raise RuntimeError(f"{workdir}: {message}")
            print(f"{workdir}: {message}", flush=True)
            with open(diverged_path, "w") as f:
                f.write(message + "\n")
            return None
    with open(summary_path) as f:
        return json.load(f)


def final_target_accuracy(summary: dict | None) -> float:
    """A diverged run scores 0: a recipe that can blow up is not shipped."""
    return float(summary["final_target_accuracy"]) if summary else 0.0


def mean(values) -> float:
    return sum(values) / len(values)


def std(values) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dev-seeds", default=None, help="default: 0,1 (round 13: 0,1,2,3)")
    parser.add_argument("--report-seeds", default="0,1,2")
    parser.add_argument("--round", default=max(ROUNDS, key=int), choices=sorted(ROUNDS, key=int))
    parser.add_argument(
        "--development-only",
        action="store_true",
        help="stop after the development domain: the demo's target is not run",
    )
    args = parser.parse_args()
    dev_seeds = args.dev_seeds or DEVELOPMENT_SEEDS.get(args.round, "0,1")
    dev_seeds = [int(s) for s in dev_seeds.split(",")]
    report_seeds = [int(s) for s in args.report_seeds.split(",")]

    def accuracies(name, overrides, adaptation, target, seeds):
        values = []
        for seed in seeds:
            folder = os.path.join(args.workdir, f"{target}-{name}-{adaptation}-seed{seed}")
            values.append(
                final_target_accuracy(
                    run(folder, run_overrides(overrides, adaptation, target, seed))
                )
            )
        return values

    candidates = ROUNDS[args.round]
    dev_target = DEVELOPMENT.get(args.round, "digits_noise")
    development = {}
    for name, overrides in candidates.items():
        only = source_only_overrides(overrides)
        dann = accuracies(name, overrides, "dann", dev_target, dev_seeds)
        none = accuracies(source_only_name(overrides), only, "none", dev_target, dev_seeds)
        development[name] = {"dann": dann, "none": none, "gain": mean(dann) - mean(none)}
        print(name, json.dumps(development[name]), flush=True)
    chosen = max(development, key=lambda name: development[name]["gain"])
    print("chosen on the development domain:", chosen, flush=True)
    if args.development_only:
        print(json.dumps({"development_domain": dev_target, "development": development}))
        return

    overrides = candidates[chosen]
    only = source_only_overrides(overrides)
    dann = accuracies(chosen, overrides, "dann", "digits_textured", report_seeds)
    none = accuracies(source_only_name(overrides), only, "none", "digits_textured", report_seeds)
    report = {
        "development_domain": dev_target,
        "development": development,
        "chosen": chosen,
        "overrides": overrides,
        "demo_target": {
            "dann": dann,
            "none": none,
            "dann_mean": mean(dann),
            "dann_std": std(dann),
            "none_mean": mean(none),
            "none_std": std(none),
        },
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

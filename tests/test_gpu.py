"""benchmarks/gpu.sh, run on the CPU at toy sizes: every command it runs on a GPU works and writes
its result file, so a renamed flag or a broken benchmark shows here rather than on a GPU."""

import json
import os
import stat
import subprocess
import sys

import pytest

from jaxdann.data import pacs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.abspath(pacs.default_root())

# Stands in for python3: the same commands at toy sizes, on this interpreter.
PYTHON3 = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
toy = {{"--image-size": "64", "--batch-size": "2", "--steps": "2", "--warmup": "1",
       "--epochs": "1"}}
args = [toy.get(args[i - 1], arg) if i else arg for i, arg in enumerate(args)]
if "jaxdann.train" in args:
    args += ["--config.epochs=1", "--config.data.limit=40"]
if any(arg.endswith("seed_experiment.py") for arg in args):
    args += ["--config.data.limit=16", "--config.batch_size=8", "--config.data.resize=72",
             "--config.data.crop=64", "--config.eval_batch_size=16"]
os.execv(sys.executable, [sys.executable, *args])
"""
NVIDIA_SMI = '#!/bin/sh\necho "name, memory.total, driver_version"\necho "cpu stand-in, 0, 0"\n'

RESULTS = [
    "env.txt",
    "step_f32.txt",
    "step_bf16_b256.txt",
    "step_bf16_b512.txt",
    "step_bf16_variants.txt",
    "profile_bf16_b256.txt",
    "demo.txt",
    "seed_experiment.txt",
]


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _gpu_sh(tmp_path, *args, pacs_root=ROOT):
    """Runs ``benchmarks/gpu.sh --out OUT --scratch SCRATCH ARGS`` from the repository root, with
    the stand-in ``python3`` and ``nvidia-smi`` first on the PATH and PACS at ``pacs_root``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "python3", PYTHON3)
    _executable(bin_dir / "nvidia-smi", NVIDIA_SMI)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        JAXDANN_PACS_ROOT=str(pacs_root),
        JAX_PLATFORMS="cpu",
    )
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a one-GPU machine
    command = ["bash", os.path.join("benchmarks", "gpu.sh")]
    command += ["--out", str(tmp_path / "out"), "--scratch", str(tmp_path / "scratch"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _last_json(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    assert lines, f"{path.name} has no JSON result:\n{path.read_text()[-2000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(ROOT),
    reason=f"PACS not found at {ROOT}; set JAXDANN_PACS_ROOT to run the real-data tests",
)
def test_all_runs_every_benchmark_and_writes_its_eight_results(tmp_path):
    result = _gpu_sh(tmp_path, "all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted(RESULTS)
    for name in RESULTS:
        text = (out / name).read_text()
        assert "exit " not in text and "Traceback" not in text, f"{name}:\n{text[-2000:]}"

    assert "cpu stand-in" in (out / "env.txt").read_text()
    f32 = _last_json(out / "step_f32.txt")
    assert f32["dtype"] == "float32" and f32["speedup_vs_torch"] > 0
    for name in ("step_bf16_b256.txt", "step_bf16_b512.txt"):
        bf16 = _last_json(out / name)
        assert bf16["dtype"] == "bfloat16" and bf16["images_per_second"] > 0
        assert "breakdown" in bf16
    variants = [
        json.loads(line)
        for line in (out / "step_bf16_variants.txt").read_text().splitlines()
        if line.startswith("{")
    ]
    assert [(v["stem"], v["pool_gradient"]) for v in variants] == [
        ("space_to_depth", "first_max"),
        ("conv", "xla"),
        ("space_to_depth", "xla"),
    ]
    assert "profile" in _last_json(out / "profile_bf16_b256.txt")
    assert "target" in (out / "demo.txt").read_text()
    seed = _last_json(out / "seed_experiment.txt")
    assert seed["epochs"] == 1


@pytest.mark.slow
def test_resnet_and_methods_write_their_comparisons_with_torch(tmp_path):
    result = _gpu_sh(tmp_path, "resnet", "methods")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    names = ["env.txt", "resnet50_f32.txt", "resnet50_bf16.txt", "methods.txt"]
    assert sorted(os.listdir(out)) == sorted(names)
    for name in names[1:]:
        text = (out / name).read_text()
        assert "exit " not in text and "Traceback" not in text, f"{name}:\n{text[-2000:]}"
    for name, dtype, torch_dtype in [
        ("resnet50_f32.txt", "float32", "float32"),
        ("resnet50_bf16.txt", "bfloat16", "bfloat16 (autocast)"),
    ]:
        row = _last_json(out / name)
        assert row["arch"] == "resnet50" and row["dtype"] == dtype
        assert row["torch"]["dtype"] == torch_dtype and row["speedup_vs_torch"] > 0
    methods = _last_json(out / "methods.txt")
    assert methods["arch"] == "alexnet"
    assert set(methods["seconds_per_step"]) >= {"dann", "cdan_e", "mcd"}
    assert set(methods["torch_seconds_per_step"]) == {"cdan_e", "mcd"}


def test_seed_says_which_domain_is_missing_and_fails(tmp_path):
    empty = tmp_path / "no_pacs"
    empty.mkdir()
    result = _gpu_sh(tmp_path, "seed", pacs_root=empty)
    assert result.returncode == 1
    assert f"no PACS domain photo in {empty}" in result.stdout
    assert not (tmp_path / "out" / "seed_experiment.txt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("bench",), "unknown part 'bench'"),
        (("--timeout", "soon", "step"), "--timeout takes a positive number"),
    ],
)
def test_bad_arguments_exit_2_before_anything_runs(tmp_path, args, message):
    result = _gpu_sh(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stdout
    assert not (tmp_path / "out").exists()

"""benchmarks/gpu_session.sh, run on the CPU at toy sizes: every command a lent GPU would run
works and writes its result file (a broken argument would otherwise cost a scarce GPU call)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from jaxdann import data as pacs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = pacs.default_root()

# Stands in for the GPU image's python3: the same commands at toy sizes, on this interpreter.
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


def _session(tmp_path, part, domains=()):
    """Runs ``gpu_session.sh part`` as the device tool would: from a copy of the tree's layout
    (links to benchmarks/, configs/, jaxdann/ and the carried PACS domains), with $OUT set."""
    work, bin_dir = tmp_path / "work", tmp_path / "bin"
    for folder in (work / ".data" / "PACS", bin_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("benchmarks", "configs", "jaxdann"):
        if not (work / name).exists():
            (work / name).symlink_to(os.path.join(REPO, name))
    for domain in domains:
        (work / ".data" / "PACS" / domain).symlink_to(os.path.join(os.path.abspath(ROOT), domain))
    _executable(bin_dir / "python3", PYTHON3)
    _executable(bin_dir / "nvidia-smi", NVIDIA_SMI)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        OUT=str(tmp_path / "out"),
        GPU_SESSION_SCRATCH=str(tmp_path / "scratch"),
        JAX_PLATFORMS="cpu",
    )
    env.pop("XLA_FLAGS", None)  # one CPU device, as on the GPU machine
    return subprocess.run(
        ["bash", os.path.join("benchmarks", "gpu_session.sh"), part],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _last_json(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    assert lines, f"{path.name} has no JSON result:\n{path.read_text()[-2000:]}"
    return json.loads(lines[-1])


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(ROOT),
    reason=f"PACS not found at {ROOT}; set JAXDANN_PACS_ROOT to run the real-data tests",
)
def test_all_runs_every_command_and_writes_its_eight_results(tmp_path):
    result = _session(tmp_path, "all", domains=("photo", "art_painting"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted(RESULTS)
    for name in RESULTS:
        text = (out / name).read_text()
        assert "exit " not in text and "Traceback" not in text, f"{name}:\n{text[-2000:]}"

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


def test_seed_part_says_when_a_domain_did_not_stay_on_the_machine(tmp_path):
    result = _session(tmp_path, "seed", domains=())
    assert result.returncode == 1
    assert "no .data/PACS/photo on this machine" in result.stdout
    assert not (tmp_path / "out" / "seed_experiment.txt").exists()


def test_an_unknown_part_is_refused(tmp_path):
    result = _session(tmp_path, "bench")
    assert result.returncode == 2
    assert "unknown part 'bench'" in result.stdout

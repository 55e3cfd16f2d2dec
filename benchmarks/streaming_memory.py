"""Peak memory of a streamed run (``data.streaming=true``) as the data grows: one epoch over
2 x 3,000 and 2 x 12,000 images, the RSS of every process (trainer and Grain's workers) summed.

    python benchmarks/streaming_memory.py [--root PACS] [--sizes 3000,12000] [--workers 2]
        [--crop 96] [--pools] [--stop-after SECONDS]

Each size is a ``folder`` data set of hard links to PACS images (``a/`` cycles through photo,
``b/`` through art_painting, the 7 classes kept), trained one epoch by ``python -m
jaxdann.train`` (small CNN, batch 64, target accuracy and the validators at the end) in a fresh
process while this one samples the process tree's RSS every 0.2 s (psutil). ``--pools`` also
runs the same without streaming (every image decoded into memory) for comparison.
``--stop-after S`` ends each run after S seconds (for sizes whose epoch is hours long, such as
DomainNet's 600,000 images: ``--sizes 300000 --stop-after 300``), and reports the peak until then.
The last line is a JSON object with each run's peak and the growth from the smallest size to
the largest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


def build_tree(pacs: str, out: str, size: int) -> None:
    """``out/{a,b}/<class>/<i>.jpg``: ``size`` hard links per domain, the classes in turn,
    each cycling through its PACS images."""
    for domain, source in (("a", "photo"), ("b", "art_painting")):
        files = {name: sorted(os.listdir(os.path.join(pacs, source, name))) for name in CLASSES}
        for index in range(size):
            name = CLASSES[index % len(CLASSES)]
            chosen = files[name][(index // len(CLASSES)) % len(files[name])]
            folder = os.path.join(out, domain, name)
            os.makedirs(folder, exist_ok=True)
            os.link(os.path.join(pacs, source, name, chosen), os.path.join(folder, f"{index}.jpg"))


def peak_rss(command: list[str], env: dict, stop_after: float) -> tuple[int, int, float, int]:
    """(peak summed RSS, peak trainer RSS, seconds, exit status) of ``command``; stopped (its
    whole tree killed, status -9) after ``stop_after`` seconds if that is > 0."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    root = psutil.Process(process.pid)
    peak_total = peak_main = 0
    while process.poll() is None:
        if 0 < stop_after < time.perf_counter() - started:
            for child in [*root.children(recursive=True), root]:
                child.kill()
            process.wait()
            return peak_total, peak_main, time.perf_counter() - started, -9
        try:
            tree = [root, *root.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree]
        except psutil.Error:  # a process ended while being read
            continue
        peak_total, peak_main = max(peak_total, sum(rss)), max(peak_main, rss[0])
        time.sleep(0.2)
    return peak_total, peak_main, time.perf_counter() - started, process.returncode


def run(tree: str, workdir: str, args, streaming: bool) -> dict:
    crop = args.crop
    flags = {
        "data.name": "folder",
        "data.root": tree,
        "data.source": "a",
        "data.target": "b",
        "data.validation": "none",
        "data.streaming": str(streaming).lower(),
        "data.workers": str(args.workers),
        "data.resize": str(crop * 8 // 7),
        "data.crop": str(crop),
        "data.cache_dir": os.path.join(workdir, "cache"),
        "model.arch": "small_cnn",
        "batch_size": "64",
        "epochs": "1",
        "parallel.num_devices": "1",
    }
    command = [sys.executable, "-m", "jaxdann.train", "--workdir", os.path.join(workdir, "run")]
    command += [f"--config.{key}={value}" for key, value in flags.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    total, main, seconds, status = peak_rss(command, env, args.stop_after)
    if status not in (0, -9):
        raise SystemExit(f"the run failed (exit {status}): {' '.join(command)}")
    return {"peak_rss_mb": round(total / 2**20), "trainer_rss_mb": round(main / 2**20)} | {
        "seconds": round(seconds, 1),
        "stopped": status == -9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", default=os.environ.get("JAXDANN_PACS_ROOT", "../shared/data/PACS")
    )
    parser.add_argument("--sizes", default="3000,12000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--pools", action="store_true")
    parser.add_argument("--stop-after", type=float, default=0.0)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    result = {"benchmark": "streaming_memory", "cpu_count": os.cpu_count(), "crop": args.crop}
    result |= {"workers": args.workers, "load_average_before": os.getloadavg()[0]}
    for streaming in (True, False) if args.pools else (True,):
        kind = "streaming" if streaming else "pools"
        for size in sizes:
            with tempfile.TemporaryDirectory() as scratch:
                build_tree(args.root, os.path.join(scratch, "tree"), size)
                measured = run(os.path.join(scratch, "tree"), scratch, args, streaming)
            result[f"{kind}_{size}"] = measured
            print(kind, size, json.dumps(measured), flush=True)
        growth = (
            result[f"{kind}_{sizes[-1]}"]["peak_rss_mb"]
            - result[f"{kind}_{sizes[0]}"]["peak_rss_mb"]
        )
        result[f"{kind}_growth_mb"] = growth
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

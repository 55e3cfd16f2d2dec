"""Images per second from JPEG files to uint8 crops: plain PIL against reduced-size decoding, on
one process and on every core, and through the streamed training pipeline (Grain).

    python benchmarks/decode_throughput.py [--root PACS] [--count 400] [--processes 2]

Two sets of the same pictures: PACS photos as released (227 x 227 JPEGs) and the same photos
enlarged to 1000 x 800 and saved as JPEG (quality 90), the size of the larger benchmarks'
photographs. Each image becomes ``Resize(256) + CenterCrop(224)`` (the seed's preprocessing):

- ``pil``: PIL decodes the whole image, then resizes (jaxdann's ``data.decode=exact``);
- ``pil_draft``: PIL's JPEG draft mode decodes at the smallest DCT scale covering the resize;
- ``simplejpeg``: libjpeg-turbo's scaled decode through simplejpeg (``data.decode=reduced``);
- ``decode_only``: simplejpeg's scaled decode alone, no resize or crop: the most a core can do.

``grain_pipeline``: :class:`jaxdann.data.streaming.TrainBatches` through
:func:`~jaxdann.data.streaming.train_iterator` with ``--processes`` worker processes, batches of
64 + 64 images (``data.decode=reduced``), nothing trained: how near the training pipeline comes
to the decoders' rate on all cores. Ratios are against ``pil`` in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdann.data import decode, streaming  # noqa: E402
from jaxdann.data.image_transforms import ImageTransform  # noqa: E402
from jaxdann.data.pipeline import FileSplit  # noqa: E402

RESIZE, CROP = 256, 224


# Each returns one pixel, not the image: the rates measure decoding, not the pickling of
# results between processes (the streamed pipeline passes batches through shared memory).


def _pil(path: str) -> int:
    return int(ImageTransform(RESIZE, CROP)(path)[0, 0, 0])


def _simplejpeg(path: str) -> int:
    return int(ImageTransform(RESIZE, CROP, decode="reduced")(path)[0, 0, 0])


def _pil_draft(path: str) -> int:
    image = decode._pil_rgb(path, RESIZE)
    return int(np.asarray(decode.center_crop(decode.resize_shorter(image, RESIZE), CROP))[0, 0, 0])


def _decode_only(path: str) -> int:
    return int(np.asarray(decode.open_rgb(path, min_short=RESIZE))[0, 0, 0])


METHODS = {"pil": _pil, "pil_draft": _pil_draft, "simplejpeg": _simplejpeg}
METHODS["decode_only"] = _decode_only


def _rate(function, paths: list[str], processes: int) -> float:
    """Images per second over ``paths``, timed on the second pass (the first warms the file
    cache and, on several processes, starts them)."""
    if processes == 1:
        for path in paths:
            function(path)
        started = time.perf_counter()
        for path in paths:
            function(path)
        return len(paths) / (time.perf_counter() - started)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(function, paths, chunksize=8)
        started = time.perf_counter()
        pool.map(function, paths, chunksize=8)
        return len(paths) / (time.perf_counter() - started)


def _enlarged(paths: list[str], folder: str) -> list[str]:
    out = []
    for index, path in enumerate(paths):
        target = os.path.join(folder, f"{index}.jpg")
        Image.open(path).convert("RGB").resize((1000, 800), Image.BICUBIC).save(target, quality=90)
        out.append(target)
    return out


def _pipeline_rate(paths: list[str], processes: int, steps: int = 24) -> float:
    root = os.path.dirname(paths[0])
    names = np.asarray([os.path.basename(p).encode() for p in paths], dtype=bytes)
    split = FileSplit(root, names, np.zeros(len(paths), np.int32), (CROP, CROP, 3))
    batches = streaming.TrainBatches(
        split, split, ImageTransform(RESIZE, CROP, decode="reduced"), 64, 1, 0, len(paths) // 64
    )
    iterator = streaming.train_iterator(batches, processes)
    for _ in range(8):  # workers started, and the buffers they fill ahead drained
        next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    seconds = time.perf_counter() - started
    iterator.close()
    return steps * 128 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = os.environ.get("JAXDANN_PACS_ROOT", "../shared/data/PACS")
    parser.add_argument("--root", default=default_root)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    folder = os.path.join(args.root, "photo")
    paths = sorted(
        os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".jpg")
    )[: args.count]
    result = {"benchmark": "decode_throughput", "cpu_count": os.cpu_count(), "images": len(paths)}
    result["load_average_before"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        sets = {"pacs_227px": paths, "enlarged_1000x800": _enlarged(paths, scratch)}
        for name, files in sets.items():
            rates = {}
            for method, function in METHODS.items():
                rates[method] = {
                    "one_process": round(_rate(function, files, 1), 1),
                    f"{args.processes}_processes": round(_rate(function, files, args.processes), 1),
                }
            rates["grain_pipeline"] = round(_pipeline_rate(files, args.processes), 1)
            key = f"{args.processes}_processes"
            rates["speedup_vs_pil"] = {
                m: round(rates[m][key] / rates["pil"][key], 2) for m in METHODS
            } | {"grain_pipeline": round(rates["grain_pipeline"] / rates["pil"][key], 2)}
            result[name] = rates
            print(name, json.dumps(rates))
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

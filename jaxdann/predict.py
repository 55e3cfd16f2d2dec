"""``python -m jaxdann.predict --run DIR PATH... [--top-k K] [--output FILE.csv|.json]
[--batch-size B] [--num-devices N]``

Classifies image files, and the images in folders (recursively), with the run's model at its
newest checkpoint and the run's preprocessing, in batches, on every device (or N). One row per
file: its path, the predicted class, its probability and the top K classes with theirs. A file
that cannot be read gets a row saying why; the others are still classified. Rows are written to
FILE as CSV or JSON (by its extension), else printed as a table.

Exit status: 0 every file was classified; 1 some could not be (a missing or unreadable file, a
folder without images), or a run file is damaged; 2 bad arguments (a folder that is not a run,
a run without checkpoint, a bad flag); 130 interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from jaxdann import config as config_lib
from jaxdann.errors import INTERRUPTED, ConfigError, exit_code, is_user_error

__all__ = ["IMAGE_EXTENSIONS", "find_images", "main", "predict_files", "write_rows"]

# What a folder's files are classified by (any case); a file named on the command line is tried
# whatever its name. Wider than training's reader: anything Pillow decodes is worth a try.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
OUTPUT_FORMATS = (".csv", ".json")


def find_images(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(path, reason)`` for every file to classify, in the order given, folders walked in
    sorted order (hidden entries skipped); ``reason`` is set for a path that cannot be used."""
    found: list[tuple[str, str | None]] = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(_walk(path))
            found += [(file, None) for file in inside]
            if not inside:
                extensions = ", ".join(IMAGE_EXTENSIONS)
                found.append((path, f"a folder holding no image files ({extensions})"))
        elif os.path.exists(path):
            found.append((path, None))
        else:
            found.append((path, "no such file or folder"))
    return found


def _walk(folder: str) -> Iterator[str]:
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, name)


def _read(run, path: str) -> tuple[np.ndarray | None, str | None]:
    """The file as the run's input, or (None, why it cannot be read)."""
    from jaxdann.data.folder import DECODE_ERRORS

    try:
        return run.read_image(path), None
    except DECODE_ERRORS as error:  # OSError covers unreadable and non-image files
        return None, f"{type(error).__name__}: {error}"


def predict_files(run, files, *, top_k: int = 3, batch_size: int = 64) -> Iterator[dict]:
    """One row per ``(path, reason)`` of :func:`find_images`, in order: ``path``, ``class``,
    ``probability``, ``top_k`` (``[{"class", "probability"}, ...]``, best first) and ``error``
    (``None``, or why the file was not classified). Files are decoded in parallel threads and
    classified ``batch_size`` at a time."""
    top_k = max(1, min(top_k, len(run.class_names)))
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            todo = [path for path, reason in chunk if reason is None]
            decoded = dict(zip(todo, pool.map(lambda p: _read(run, p), todo), strict=True))
            readable = [path for path in todo if decoded[path][0] is not None]
            images = np.stack([decoded[path][0] for path in readable]) if readable else None
            probabilities = run.predict(images, batch_size, preprocessed=True) if readable else []
            by_path = dict(zip(readable, probabilities, strict=True))
            for path, reason in chunk:
                if path in by_path:
                    yield _row(path, by_path[path], run.class_names, top_k)
                else:
                    yield _failed(path, reason or decoded[path][1])


def _row(path: str, probabilities: np.ndarray, class_names, top_k: int) -> dict:
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    ranked = [{"class": class_names[i], "probability": float(probabilities[i])} for i in order]
    return {
        "path": path,
        "class": ranked[0]["class"],
        "probability": ranked[0]["probability"],
        "top_k": ranked,
        "error": None,
    }


def _failed(path: str, reason: str) -> dict:
    return {"path": path, "class": None, "probability": None, "top_k": [], "error": reason}


def write_rows(rows: list[dict], output: str | None, top_k: int, header: dict) -> None:
    """Rows to ``output`` (``.csv``: one column pair per rank; ``.json``: ``header`` and the
    rows), or as a table on stdout when ``output`` is None."""
    if output is None:
        sys.stdout.write(_table(rows))
        return
    from jaxdann.training.run_folder import write_text

    if output.lower().endswith(".json"):
        write_text(output, json.dumps({**header, "predictions": rows}, indent=2) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    ranks = [f"{name}_{rank}" for rank in range(2, top_k + 1) for name in ("class", "probability")]
    writer.writerow(["path", "class", "probability", *ranks, "error"])
    for row in rows:
        cells = [row["path"], row["class"] or "", _number(row["probability"])]
        for rank in range(1, top_k):
            entry = row["top_k"][rank] if rank < len(row["top_k"]) else None
            cells += [entry["class"], _number(entry["probability"])] if entry else ["", ""]
        writer.writerow([*cells, row["error"] or ""])
    write_text(output, buffer.getvalue())


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _table(rows: list[dict]) -> str:
    width = max([len("path"), *(len(row["path"]) for row in rows)])
    lines = [f"{'path':<{width}}  {'class':<16} {'prob':>6}  top-k"]
    for row in rows:
        if row["error"] is not None:
            lines.append(f"{row['path']:<{width}}  not classified: {row['error']}")
            continue
        ranked = ", ".join(f"{e['class']} {e['probability']:.3f}" for e in row["top_k"])
        lines.append(
            f"{row['path']:<{width}}  {row['class']:<16} {row['probability']:6.3f}  {ranked}"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.predict",
        description="Classify image files and folders with a trained run's model.",
        epilog="exit status: 0 every file classified; 1 some not; 2 bad arguments.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders")
    parser.add_argument("--run", required=True, help="the run folder (python -m jaxdann.train's)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per row (default 3)")
    parser.add_argument("--output", help="FILE.csv or FILE.json (default: a table on stdout)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    parser.add_argument("--num-devices", type=int, default=0, help="devices to use (0: all)")
    return parser


def _check_arguments(arguments) -> None:
    for name in ("top_k", "batch_size"):
        if getattr(arguments, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1.")
    output = arguments.output
    if output is not None and not output.lower().endswith(OUTPUT_FORMATS):
        raise ConfigError(f"--output {output}: name a .csv or .json file.")
    if output is not None and os.path.isdir(output):
        raise ConfigError(f"--output {output} is a folder; name a .csv or .json file.")
    folder = os.path.dirname(os.path.abspath(output)) if output is not None else ""
    if output is not None and not os.path.isdir(folder):
        raise ConfigError(
            f"--output {output}: the folder {folder} does not exist; create it or name a file "
            "in an existing folder."
        )
    if output is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--output {output}: the folder {folder} cannot be written; name a file in a "
            "writable folder."
        )


def run_command(arguments) -> int:
    """Loads the run, classifies, writes; the exit status (0 all classified, 1 some not)."""
    from jaxdann.inference import load_run

    _check_arguments(arguments)
    run = load_run(arguments.run, num_devices=arguments.num_devices)
    files = find_images(arguments.paths)
    rows = list(predict_files(run, files, top_k=arguments.top_k, batch_size=arguments.batch_size))
    top_k = max(1, min(arguments.top_k, len(run.class_names)))
    header = {"run": os.path.abspath(run.workdir), "checkpoint_epoch": run.epoch}
    write_rows(rows, arguments.output, top_k, header)
    failed = sum(row["error"] is not None for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} file(s) could not be classified", file=sys.stderr)
    elif arguments.output:
        print(f"{len(rows)} file(s) classified; written to {arguments.output}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)  # argparse exits 2 on a bad flag
    try:
        return run_command(arguments)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    config_lib.exit_process(main())

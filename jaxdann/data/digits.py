"""The digits benchmark: MNIST, USPS, SVHN and MNIST-M in the files of their official releases.

Each domain's files lie in ``ROOT/<domain>/`` (or in the root itself):

- ``mnist``: the IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped (``.gz``) or not; 28 px grey.
- ``usps``: the LIBSVM files ``usps.bz2`` (train, 7,291) and ``usps.t.bz2`` (test, 2,007): lines
  ``<digit + 1> 1:<v> ... 256:<v>``, values in [-1, 1]; 16 px grey.
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` (``X`` 32x32x3xN, ``y`` with 10 for the
  digit 0), read with :func:`scipy.io.loadmat`.
- ``mnist_m``: ``mnist_m_train/`` and ``mnist_m_test/`` of PNG images, listed by
  ``mnist_m_train_labels.txt`` / ``mnist_m_test_labels.txt`` (``<file> <digit>`` lines); 28 px
  colour. Decoded once and cached like any image folder.

Grey digits become three equal channels; every image is resized to ``data.resize`` square (PIL
bilinear) and centre-cropped to ``data.crop``, so domains of different sizes share one size
(28 for MNIST -> MNIST-M, 32 with SVHN, as the DANN paper does). Sources train on their ``train``
split, target accuracy is measured on the target's ``test`` split. Normalised with mean and std
0.5, as TLlib does for digits.
"""

from __future__ import annotations

import bz2
import gzip
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxdann.data.dataset import Dataset, Domain, select_rows
from jaxdann.data.folder import format_paths, load_listed
from jaxdann.data.image_list import parse_image_list
from jaxdann.errors import ConfigError, DataError

__all__ = ["CLASS_NAMES", "DOMAINS", "FILES", "Digits", "read_idx", "read_libsvm", "read_svhn"]

CLASS_NAMES = tuple(str(digit) for digit in range(10))
DOMAINS = ("mnist", "usps", "svhn", "mnist_m")
# (domain, split) -> the official files it is read from (images, labels), without .gz for IDX.
FILES = {
    ("mnist", "train"): ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("mnist", "test"): ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ("usps", "train"): ("usps.bz2",),
    ("usps", "test"): ("usps.t.bz2",),
    ("svhn", "train"): ("train_32x32.mat",),
    ("svhn", "test"): ("test_32x32.mat",),
    ("mnist_m", "train"): ("mnist_m_train", "mnist_m_train_labels.txt"),
    ("mnist_m", "test"): ("mnist_m_test", "mnist_m_test_labels.txt"),
}
_IDX_TYPES = {0x08: np.uint8}  # the only element type MNIST uses
_USPS_PIXELS = 256


# --------------------------------------------------------------------------- the file formats


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """An IDX file (MNIST's format, gzipped or not) as a uint8 array of its dimensions."""
    try:
        with _open(path) as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(
            f"{path!r} cannot be read ({error}); replace it with the official file."
        ) from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path!r} is not an IDX file of bytes; replace it with the official file.")
    dims = raw[3]
    if len(raw) < 4 + 4 * dims:
        raise DataError(
            f"{path!r} ends inside its header ({len(raw)} bytes where {dims} dimensions need "
            f"{4 + 4 * dims}); the file is truncated or damaged, so download it again."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise DataError(
            f"{path!r} holds {data.size} values where its header announces {shape}; the file is "
            "truncated or damaged, so download it again."
        )
    _check_not_empty(shape, path)
    return data.reshape(shape)


def _check_not_empty(shape: tuple[int, ...], path: str) -> None:
    """A DataError when an array read from ``path`` has no items (a dimension of 0)."""
    if 0 in shape:
        raise DataError(
            f"{path!r} holds no digits (its arrays have shape {shape}); replace it with the "
            "official file."
        )


def read_libsvm(path: str) -> tuple[np.ndarray, np.ndarray]:
    """USPS's LIBSVM file: uint8 images [N, 16, 16] (``(v + 1) / 2 * 255`` truncated, as
    torchvision's ``USPS``) and labels (first field - 1)."""
    images, labels = [], []
    try:
        with bz2.open(path, "rt") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    label, pixels = _libsvm_line(line, path, line_number)
                    labels.append(label)
                    images.append(pixels)
    except (OSError, EOFError) as error:
        raise DataError(
            f"{path!r} cannot be read ({error}); replace it with the official file."
        ) from None
    if not labels:
        raise DataError(f"{path!r} holds no digits; replace it with the official file.")
    # float32 arithmetic, then truncation: torchvision's USPS reader, pixel for pixel.
    pixels = (np.stack(images) + np.float32(1)) / np.float32(2) * np.float32(255)
    images = np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 16, 16)
    return images, np.asarray(labels, np.int64)


def _libsvm_line(line: str, path: str, line_number: int) -> tuple[int, np.ndarray]:
    """One ``<label> <index>:<value> ...`` line: (label - 1, 256 float32 values)."""
    fields = line.split()
    pixels = np.zeros(_USPS_PIXELS, np.float32)
    try:
        label = int(float(fields[0])) - 1
        for field in fields[1:]:
            index, value = field.split(":")
            if not 1 <= int(index) <= _USPS_PIXELS:
                raise IndexError(index)
            pixels[int(index) - 1] = float(value)
    except (ValueError, IndexError):
        raise DataError(
            f"Line {line_number} of {path!r} is not '<label> <index>:<value> ...' with indices "
            f"1..{_USPS_PIXELS}; replace the file with the official usps.bz2 / usps.t.bz2."
        ) from None
    return label, pixels


def read_svhn(path: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's ``.mat`` file: uint8 images [N, 32, 32, 3] and labels (10 read as 0)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (OSError, ValueError, TypeError) as error:
        raise DataError(
            f"{path!r} cannot be read as a MATLAB file ({error}); replace it."
        ) from None
    if "X" not in mat or "y" not in mat or np.ndim(mat["X"]) != 4:
        raise DataError(f"{path!r} lacks SVHN's X (32x32x3xN) and y arrays; replace it.")
    _check_not_empty(np.shape(mat["X"]), path)
    labels = np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2))), labels


# --------------------------------------------------------------------------- the dataset


def _resized(images: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """uint8 [N, H, W] or [N, H, W, 3] -> [N, crop, crop, 3]: resize square, centre crop."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] != (resize, resize):
        size = (resize, resize)
        images = np.stack(
            [np.asarray(Image.fromarray(x).resize(size, Image.BILINEAR)) for x in images]
        )
    top = int(round((resize - crop) / 2.0))
    return np.ascontiguousarray(images[:, top : top + crop, top : top + crop])


def _check_labels(labels: np.ndarray, count: int, path: str) -> np.ndarray:
    """int32 labels; a DataError when any lies outside 0..9 or their count is not the images'."""
    if len(labels) != count:
        raise DataError(
            f"{path!r} gives {len(labels)} labels for {count} images; use the official files."
        )
    outside = np.flatnonzero((labels < 0) | (labels > 9))
    if len(outside):
        rows = format_paths([f"row {row}: {labels[row]}" for row in outside])
        raise DataError(
            f"{len(outside)} labels in {path!r} lie outside the digits 0..9 ({rows}); the file is "
            "damaged or not the official one."
        )
    return labels.astype(np.int32)


class Digits(Dataset):
    """MNIST, USPS, SVHN and MNIST-M (``data.name=digits``), each with a train and test split."""

    name = "digits"
    domains = DOMAINS
    splits = ("train", "test")
    train_split, test_split = "train", "test"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    root_variable = "JAXDANN_DIGITS_ROOT"

    def root(self, data) -> str:
        return data.root or os.environ.get(self.root_variable, "")

    def class_names(self, data, domains: Sequence[str] | None = None) -> tuple[str, ...]:
        return CLASS_NAMES

    def check_settings(self, data) -> None:
        from jaxdann.data.demo import DEMO_DOMAINS

        if data.source in DEMO_DOMAINS or data.target in DEMO_DOMAINS:
            raise ConfigError(
                f"config key data.name='digits' names the MNIST/USPS/SVHN/MNIST-M benchmark "
                f"(domains {', '.join(DOMAINS)}), and data.source={data.source!r} with "
                f"data.target={data.target!r} are the embedded demo's; use data.name=demo."
            )
        super().check_settings(data)

    def present_domains(self, data) -> tuple[str, ...]:
        present = []
        for domain in self.domains:
            try:
                self.find(data, domain, FILES[(domain, "train")][-1])
            except DataError:
                continue
            present.append(domain)
        return tuple(present)

    def find(self, data, domain: str, name: str) -> str:
        """The path of one of the domain's official files (IDX also ``.gz``), in
        ``ROOT/<domain>/`` or the root; a DataError naming the layout when it is in neither."""
        root = self.root(data)
        if not root or not os.path.isdir(root):
            raise DataError(
                f"Digits root {root!r} is not a folder; pass --config.data.root (or set "
                f"${self.root_variable}) to a folder holding {', '.join(DOMAINS)} folders."
            )
        names = (name, name + ".gz") if "idx" in name else (name,)
        places = [os.path.join(root, domain, n) for n in names] + [
            os.path.join(root, n) for n in names
        ]
        for place in places:
            if os.path.exists(place):
                return place
        raise DataError(
            f"{domain} needs {' or '.join(names)}, found neither in {os.path.join(root, domain)!r} "
            f"nor in {root!r}; put the official {domain} files there."
        )

    def load(
        self,
        domain: str,
        split: str,
        data,
        *,
        shard: tuple[int, int] = (0, 1),
        limit: int = 0,
        progress: bool = True,
    ) -> Domain:
        self.check_domain(domain)
        self.check_split(split)
        if domain == "mnist_m":
            return self._load_mnist_m(split, data, shard, limit, progress)
        images, labels, source = self._read_arrays(domain, split, data)
        rows = select_rows(len(labels), shard, limit)
        labels = _check_labels(labels, len(images), source)[rows]
        return Domain(domain, _resized(images[rows], data.resize, data.crop), labels, CLASS_NAMES)

    def listing(self, domain: str, split: str, data) -> tuple[str, tuple[str, ...], np.ndarray]:
        self.check_domain(domain)
        self.check_split(split)
        if domain == "mnist_m":
            base, paths, labels = self.list_mnist_m(data, split)
            return base, tuple(paths), labels
        images, labels, source = self._read_arrays(domain, split, data)
        return "", (), _check_labels(labels, len(images), source)

    def _read_arrays(self, domain: str, split: str, data) -> tuple[np.ndarray, np.ndarray, str]:
        """(images, labels, the labels' file) of MNIST, USPS or SVHN."""
        files = [self.find(data, domain, name) for name in FILES[(domain, split)]]
        if domain == "mnist":
            images, labels = read_idx(files[0]), read_idx(files[1])
            if images.ndim != 3 or labels.ndim != 1:
                raise DataError(
                    f"{files[0]!r} and {files[1]!r} are not MNIST's image (N x 28 x 28) and label "
                    "(N) files; replace them with the official ones."
                )
            return images, labels.astype(np.int64), files[1]
        reader = read_libsvm if domain == "usps" else read_svhn
        return (*reader(files[0]), files[0])

    def list_mnist_m(self, data, split: str) -> tuple[str, list[str], np.ndarray]:
        """MNIST-M's root folder, image paths relative to it and labels, from the list."""
        folder_name, list_name = FILES[("mnist_m", split)]
        list_path = self.find(data, "mnist_m", list_name)
        base = os.path.dirname(list_path)
        if not os.path.isdir(os.path.join(base, folder_name)):
            raise DataError(
                f"{os.path.join(base, folder_name)!r} is not a folder: MNIST-M keeps the images "
                f"{list_name} lists in {folder_name}/ beside it."
            )
        entries = parse_image_list(list_path, "label list", 0)
        paths = [f"{folder_name}/{name}" for name, _ in entries]
        missing = [p for p in paths if not os.path.isfile(os.path.join(base, p))]
        if missing:
            raise DataError(
                f"{len(missing)} files listed in {list_path!r} do not exist in "
                f"{os.path.join(base, folder_name)!r}: {format_paths(missing)}; fix the list."
            )
        labels = np.asarray([number for _, number in entries], np.int64)
        return base, paths, _check_labels(labels, len(paths), list_path)

    def _load_mnist_m(self, split, data, shard, limit, progress) -> Domain:
        base, paths, labels = self.list_mnist_m(data, split)
        loaded = load_listed(
            base,
            "mnist_m",
            paths,
            labels,
            CLASS_NAMES,
            split=split,
            resize=data.resize,
            crop=data.crop,
            cache_dir=data.cache_dir or None,
            on_bad=data.on_bad,
            progress=progress,
            shard=shard,
            limit=limit,
        )
        return loaded

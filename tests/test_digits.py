"""The digits benchmark's readers on files written in each official format: MNIST's IDX (gzipped
or not), USPS's bzip2 LIBSVM, SVHN's MATLAB files and MNIST-M's folder + label list; and the
bad files each one refuses in one sentence."""

from __future__ import annotations

import bz2
import gzip
import os

import numpy as np
import pytest
from PIL import Image

from jaxdann import config as config_lib
from jaxdann.data import DATASETS, explore, pipeline
from jaxdann.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
MNIST = RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([5, 0, 4, 1, 9, 2])
USPS = np.round(RNG.uniform(-1, 1, (4, 256)), 4), np.array([1, 10, 3, 7])  # digits 0, 9, 2, 6
SVHN = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8), np.array([[10], [1], [2], [3], [9]])


def _idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _write_mnist(folder, gz: bool) -> None:
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        _idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", MNIST[0])
        _idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", MNIST[1])


def _write_usps(folder) -> None:
    os.makedirs(folder, exist_ok=True)
    lines = [
        f"{label} " + " ".join(f"{i + 1}:{v}" for i, v in enumerate(row))
        for row, label in zip(*USPS, strict=True)
    ]
    for name in ("usps.bz2", "usps.t.bz2"):
        with bz2.open(folder / name, "wt") as handle:
            handle.write("\n".join(lines) + "\n")


def _write_svhn(folder) -> None:
    from scipy.io import savemat

    os.makedirs(folder, exist_ok=True)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        savemat(folder / name, {"X": SVHN[0], "y": SVHN[1]})


def _write_mnist_m(folder) -> np.ndarray:
    images = RNG.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    for split in ("train", "test"):
        os.makedirs(folder / f"mnist_m_{split}", exist_ok=True)
        lines = []
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"mnist_m_{split}" / f"{index:08d}.png")
            lines.append(f"{index:08d}.png {(3 * index) % 10}")
        (folder / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    return images


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "digits"
    _write_mnist(root / "mnist", gz=True)
    _write_usps(root / "usps")
    _write_svhn(root / "svhn")
    _write_mnist_m(root / "mnist_m")
    return root


def _data(root, tmp_path, size=28, **overrides):
    settings = {
        "data.name": "digits",
        "data.root": str(root),
        "data.source": "mnist",
        "data.target": "mnist_m",
        "data.validation": "none",
        "data.resize": str(size),
        "data.crop": str(size),
        "data.cache_dir": str(tmp_path / "cache"),
    }
    return config_lib.apply_overrides(config_lib.base_config(), settings | overrides).data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_become_three_equal_channels(tmp_path, gz):
    _write_mnist(tmp_path / "mnist", gz)
    loaded = DATASETS.get("digits").load("mnist", "train", _data(tmp_path, tmp_path))
    assert loaded.images.shape == (6, 28, 28, 3) and loaded.labels.tolist() == MNIST[1].tolist()
    for channel in range(3):
        np.testing.assert_array_equal(loaded.images[..., channel], MNIST[0])


def test_usps_libsvm_values_and_labels(root, tmp_path):
    loaded = DATASETS.get("digits").load("usps", "test", _data(root, tmp_path, 16))
    assert loaded.labels.tolist() == [0, 9, 2, 6]
    torchvision = pytest.importorskip("torchvision", reason="the convert extra brings torchvision")
    reference = torchvision.datasets.USPS(str(root / "usps"), train=False)
    np.testing.assert_array_equal(loaded.images[..., 1], reference.data)
    assert loaded.labels.tolist() == reference.targets


def test_svhn_mat_files_read_ten_as_zero(root, tmp_path):
    loaded = DATASETS.get("digits").load("svhn", "train", _data(root, tmp_path, 32))
    assert loaded.labels.tolist() == [0, 1, 2, 3, 9]
    np.testing.assert_array_equal(loaded.images[2], SVHN[0][..., 2])


def test_mnist_to_mnist_m_at_one_size(root, tmp_path):
    config = config_lib.base_config()
    config.data = _data(root, tmp_path, 32)
    data = pipeline.load_experiment_data(config)
    assert data.source.images.shape == (6, 32, 32, 3) and data.target.images.shape == (4, 32, 32, 3)
    assert data.target_eval.labels.tolist() == [0, 3, 6, 9]
    assert data.mean == data.std == (0.5, 0.5, 0.5)
    one = np.asarray(Image.fromarray(MNIST[0][0]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(data.source.images[0, ..., 0], one)


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            lambda r: os.remove(r / "svhn" / "test_32x32.mat"),
            "svhn needs test_32x32.mat, found neither in .*svhn' nor in",
        ),
        (
            lambda r: (r / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"x")),
            "t10k-labels-idx1-ubyte.gz' is not an IDX file",
        ),
        (
            lambda r: _idx(
                r / "mnist" / "t10k-labels-idx1-ubyte.gz", np.array([5, 0, 4, 11, 9, 2])
            ),
            r"1 labels in .*t10k-labels-idx1-ubyte.gz' lie outside the digits 0..9 \(row 3: 11\)",
        ),
        (
            lambda r: (r / "mnist_m" / "mnist_m_test" / "00000002.png").unlink(),
            r"1 files listed in .*mnist_m_test_labels.txt' do not exist .*00000002.png",
        ),
        (
            lambda r: (r / "mnist_m" / "mnist_m_test" / "00000001.png").write_bytes(b"png?"),
            r"1 images in .*mnist_m' could not be decoded: .*00000001.png",
        ),
    ],
)
def test_bad_digits_files_are_one_sentence(root, tmp_path, damage, message):
    damage(root)
    dataset = DATASETS.get("digits")
    with pytest.raises(DataError, match=message) as raised:
        for domain in ("mnist", "svhn", "mnist_m"):
            dataset.load(domain, "test", _data(root, tmp_path, 32), progress=False)
    assert str(raised.value).count("\n") == 0


def test_the_demo_names_under_digits_point_to_the_demo():
    config = config_lib.demo_config()
    config.data.name = "digits"
    with pytest.raises(ConfigError, match="are the embedded demo's; use data.name=demo"):
        config_lib.validate(config)
    config.data.name = "demo"
    config_lib.validate(config)


def test_the_data_command_counts_digits(root, capsys):
    assert explore.main(["--dataset", "digits", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[1:3] == ["mnist/train", "mnist/test"]
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    assert total[1:] == ["6", "6", "4", "4", "5", "5", "4", "4"]


def test_an_idx_header_announcing_more_dimensions_than_the_file_holds(tmp_path):
    _write_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (6).to_bytes(4, "big"))  # 2 of 3 sizes missing
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte' ends inside its header"):
        DATASETS.get("digits").load("mnist", "train", _data(tmp_path, tmp_path))


@pytest.mark.parametrize("domain", ["mnist", "svhn"])
def test_files_without_digits_are_refused(tmp_path, domain):
    from scipy.io import savemat

    if domain == "mnist":
        _write_mnist(tmp_path / "mnist", gz=False)
        _idx(tmp_path / "mnist" / "train-images-idx3-ubyte", np.zeros((0, 28, 28)))
        _idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(0))
        name = "train-images-idx3-ubyte"
    else:
        _write_svhn(tmp_path / "svhn")
        savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": SVHN[0][..., :0], "y": SVHN[1][:0]})
        name = "train_32x32.mat"
    with pytest.raises(DataError, match=rf"{name}' holds no digits") as raised:
        DATASETS.get("digits").load(domain, "train", _data(tmp_path, tmp_path))
    assert str(raised.value).count("\n") == 0


@pytest.mark.parametrize("index", ["0", "257", "-3"])
def test_usps_pixel_indices_outside_1_to_256_name_the_line(root, tmp_path, index):
    with bz2.open(root / "usps" / "usps.t.bz2", "at") as handle:
        handle.write(f"3 1:0.5 {index}:0.25\n")
    dataset = DATASETS.get("digits")
    assert len(dataset.load("usps", "train", _data(root, tmp_path))) == 4
    with pytest.raises(DataError, match=r"Line 5 of .*usps.t.bz2' is not .* indices 1..256"):
        dataset.load("usps", "test", _data(root, tmp_path))

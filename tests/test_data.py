"""Tests for jaxdann.data's folder reader and PACS: torchvision-equal preprocessing, bad-data
errors, cache, statistics and the command line."""

from __future__ import annotations

import concurrent.futures
import os
import re
import sys
import warnings

import jax
import numpy as np
import pytest
from PIL import Image, ImageFile

from jaxdann.data import explore, folder
from jaxdann.data import pacs as data
from jaxdann.errors import ConfigError, DataError

# Published PACS counts (README of the dataset copy, Li et al. 2017), classes in sorted order.
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_COUNTS = {
    "art_painting": (379, 255, 285, 184, 201, 295, 449),
    "cartoon": (389, 457, 346, 135, 324, 288, 405),
    "photo": (189, 202, 182, 186, 199, 280, 432),
    "sketch": (772, 740, 753, 608, 816, 80, 160),
}
SMALL = {"resize": 36, "crop": 32}  # sizes that keep decoding fast


def _noise(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A smooth-ish random image of PIL ``size`` (width, height) in ``mode``."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    pixels = np.kron(coarse, np.ones((4, 4, 1), dtype=np.uint8))[:height, :width]
    pixels = np.clip(pixels + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        return image.quantize(colors=16)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        image = image.convert("RGBA")
        image.putalpha(alpha)
        return image
    return image.convert(mode)


def _save(path: str, size=(40, 30), mode="RGB", seed=0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _noise(size, mode, seed).save(path)
    return path


def _make_tree(root, domains=("a", "b"), classes=("zebra", "cat", "dog"), per_class=2) -> str:
    """``root/<domain>/<class>/<image>`` with varied sizes, modes and extensions."""
    kinds = [
        ("rgb.jpg", (40, 30), "RGB"),
        ("grey.png", (30, 50), "L"),
        ("rgba.png", (45, 45), "RGBA"),
        ("palette.png", (50, 33), "P"),
        ("UPPER.JPG", (37, 61), "RGB"),
    ]
    seed = 0
    for domain in domains:
        for class_index, class_name in enumerate(classes):
            for index in range(per_class):
                name, size, mode = kinds[(class_index + index) % len(kinds)]
                _save(os.path.join(root, domain, class_name, f"{index}_{name}"), size, mode, seed)
                seed += 1
    return str(root)


@pytest.fixture
def tree(tmp_path) -> str:
    return _make_tree(tmp_path / "pacs")


def _truncated_jpeg(path: str) -> None:
    _save(path, (64, 64), "RGB", seed=99)
    with open(path, "rb") as handle:
        content = handle.read()
    with open(path, "wb") as handle:
        handle.write(content[: len(content) // 2])


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "size,mode",
    [
        ((300, 200), "RGB"),  # landscape
        ((180, 260), "L"),  # portrait, grey
        ((256, 300), "RGBA"),  # shorter side already 256: torchvision skips the resize
        ((229, 231), "P"),
        ((333, 250), "CMYK"),
    ],
)
@pytest.mark.parametrize("resize,crop", [(256, 224), (36, 32)])
def test_preprocess_matches_torchvision(tmp_path, size, mode, resize, crop):
    transforms = pytest.importorskip("torchvision.transforms")
    extension = ".jpg" if mode in ("RGB", "CMYK") else ".png"
    path = _save(str(tmp_path / f"image{extension}"), size, mode, seed=3)
    reference = transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD),
        ]
    )(Image.open(path).convert("RGB"))
    expected = reference.numpy().transpose(1, 2, 0)

    image = data.preprocess_image(path, resize=resize, crop=crop)
    assert image.shape == (crop, crop, 3) and image.dtype == np.uint8
    actual = np.asarray(data.normalize(image[None]))[0]
    one_grey_level = 1 / 255 / min(data.IMAGENET_STD) + 1e-5
    np.testing.assert_allclose(actual, expected, rtol=0, atol=one_grey_level)


@pytest.mark.parametrize("size,mode", [((300, 200), "RGB"), ((180, 260), "L"), ((64, 64), "P")])
def test_square_resize_is_tllibs_resize_image(tmp_path, size, mode):
    transforms = pytest.importorskip("torchvision.transforms")
    extension = ".jpg" if mode == "RGB" else ".png"
    path = _save(str(tmp_path / f"image{extension}"), size, mode, seed=5)
    # TLlib's ResizeImage(64): PIL's resize to (64, 64) with its default filter; then CenterCrop.
    tllib = transforms.Compose([lambda image: image.resize((64, 64)), transforms.CenterCrop(56)])
    expected = np.asarray(tllib(Image.open(path).convert("RGB")))
    image = data.preprocess_image(path, resize=64, crop=56, resize_mode="square")
    np.testing.assert_array_equal(image, expected)
    if size[0] != size[1]:  # the shorter-side resize keeps the aspect ratio: other pixels
        assert not np.array_equal(data.preprocess_image(path, resize=64, crop=56), expected)


def test_normalize_is_jittable_and_exact_at_extremes():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[1] = 255
    normalized = jax.jit(data.normalize)(images)
    assert normalized.dtype == np.float32 and normalized.shape == images.shape
    mean, std = np.asarray(data.IMAGENET_MEAN), np.asarray(data.IMAGENET_STD)
    np.testing.assert_allclose(normalized[0, 0, 0], -mean / std, rtol=1e-6)
    np.testing.assert_allclose(normalized[1, 0, 0], (1 - mean) / std, rtol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        data.normalize(images.astype(np.float32))


def test_truncated_images_are_not_silently_loaded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_crop_larger_than_resize_is_rejected(tree):
    with pytest.raises(ValueError, match=r"crop \(40\) must not exceed resize \(36\)"):
        data.load_domain(tree, "a", resize=36, crop=40, cache_dir=False)


# --------------------------------------------------------------------------- listing


def test_list_domain_labels_follow_sorted_class_names(tree):
    open(os.path.join(tree, "a", "cat", ".DS_Store"), "w").close()  # ignored silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths, labels, class_names = data.list_domain(tree, "a")
    assert class_names == ("cat", "dog", "zebra")
    assert labels.dtype == np.int32
    assert paths == [
        "a/cat/0_grey.png",
        "a/cat/1_rgba.png",
        "a/dog/0_rgba.png",
        "a/dog/1_palette.png",
        "a/zebra/0_rgb.jpg",
        "a/zebra/1_grey.png",
    ]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_upper_case_extension_is_an_image(tmp_path):
    tree = _make_tree(tmp_path / "pacs", domains=("a",), classes=("c0", "c1", "c2", "c3"))
    paths, _, _ = data.list_domain(tree, "a")
    assert "a/c3/1_UPPER.JPG" in paths
    domain = data.load_domain(tree, "a", cache_dir=False, workers=1, progress=False, **SMALL)
    assert domain.paths == tuple(paths) and domain.images.shape == (8, 32, 32, 3)


def test_check_classes_names_the_difference(tree):
    os.rename(os.path.join(tree, "b", "dog"), os.path.join(tree, "b", "cow"))
    assert data.check_classes(tree, ["a"]) == ("cat", "dog", "zebra")
    with pytest.raises(DataError, match="'cow' is missing from a") as raised:
        data.check_classes(tree, ["a", "b"])
    assert "'dog' is missing from b (present in a)" in str(raised.value)
    with pytest.raises(DataError, match="'cow' is missing from a"):
        data.load_domains(tree, ["a", "b"], cache_dir=False, **SMALL)


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=re.escape(missing) + ".*art_painting/.*JAXDANN_PACS_ROOT"):
        data.list_domain(missing, "photo")


def test_missing_domain_lists_found_domains(tree):
    with pytest.raises(DataError, match=re.escape(os.path.join(tree, "photo")) + ".*found.*a, b"):
        data.load_domain(tree, "photo", cache_dir=False)


def test_domain_without_class_folders(tmp_path):
    os.makedirs(tmp_path / "root" / "a")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "root" / "a")) + ".*no class"):
        data.list_domain(tmp_path / "root", "a")


def test_empty_class_folder(tree):
    empty = os.path.join(tree, "a", "empty")
    os.makedirs(empty)
    open(os.path.join(empty, ".DS_Store"), "w").close()
    with pytest.raises(DataError, match=re.escape(empty) + ".* has no images"):
        data.list_domain(tree, "a")


def test_non_image_files_error_or_skip(tree):
    notes = os.path.join(tree, "a", "cat", "notes.txt")
    extra = os.path.join(tree, "a", "dog", "image.gif")
    for path in (notes, extra):
        open(path, "w").close()
    with pytest.raises(DataError, match="2 entries .* not images") as raised:
        data.list_domain(tree, "a")
    message = str(raised.value)
    assert notes in message and extra in message and "on_bad='skip'" in message

    with pytest.warns(UserWarning, match=re.escape(notes)):
        paths, labels, _ = data.list_domain(tree, "a", on_bad="skip")
    assert len(paths) == len(labels) == 6
    assert not any(path.endswith((".txt", ".gif")) for path in paths)


def test_on_bad_must_be_known(tree):
    with pytest.raises(ValueError, match="on_bad must be one of"):
        data.load_domain(tree, "a", on_bad="ignore", cache_dir=False)


# --------------------------------------------------------------------------- bad images


def _add_bad_images(tree: str) -> tuple[str, str]:
    truncated = os.path.join(tree, "a", "cat", "truncated.jpg")
    garbage = os.path.join(tree, "a", "zebra", "garbage.png")
    _truncated_jpeg(truncated)
    with open(garbage, "wb") as handle:
        handle.write(b"this is not a png")
    return truncated, garbage


def test_all_bad_images_are_named(tree):
    truncated, garbage = _add_bad_images(tree)
    with pytest.raises(DataError, match="2 images .* could not be decoded") as raised:
        data.load_domain(tree, "a", cache_dir=False, workers=1, progress=False, **SMALL)
    message = str(raised.value)
    assert truncated in message and garbage in message
    assert "pass on_bad='skip' (config key data.on_bad=skip, or --on-bad skip)" in message


def test_skip_drops_exactly_the_bad_images_with_one_warning(tree):
    good_paths, good_labels, _ = data.list_domain(tree, "a")
    truncated, garbage = _add_bad_images(tree)
    with pytest.warns(UserWarning) as record:
        domain = data.load_domain(
            tree, "a", cache_dir=False, on_bad="skip", workers=1, progress=False, **SMALL
        )
    skip_warnings = [w for w in record if "could not be decoded" in str(w.message)]
    assert len(skip_warnings) == 1
    assert truncated in str(skip_warnings[0].message) and garbage in str(skip_warnings[0].message)
    assert domain.paths == tuple(good_paths)
    np.testing.assert_array_equal(domain.labels, good_labels)
    assert len(domain) == len(good_paths) == domain.images.shape[0]
    expected = data.preprocess_image(os.path.join(tree, good_paths[0]), **SMALL)
    np.testing.assert_array_equal(domain.images[0], expected)


def test_parallel_decoding_equals_serial(tmp_path, monkeypatch):
    pools = []

    class RecordingPool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", RecordingPool)
    tree = _make_tree(tmp_path / "pacs", domains=("a",), classes=("c0", "c1"), per_class=10)
    _truncated_jpeg(os.path.join(tree, "a", "c0", "5_bad.jpg"))  # in the middle chunk
    kwargs = dict(cache_dir=False, on_bad="skip", progress=False, **SMALL)
    with pytest.warns(UserWarning, match="5_bad.jpg"):
        serial = data.load_domain(tree, "a", workers=1, **kwargs)
    with pytest.warns(UserWarning, match="5_bad.jpg"):
        parallel = data.load_domain(tree, "a", workers=2, **kwargs)
    assert pools == [1, 2]
    assert len(serial) == 20 and serial.paths == parallel.paths
    np.testing.assert_array_equal(serial.images, parallel.images)
    np.testing.assert_array_equal(serial.labels, parallel.labels)


# --------------------------------------------------------------------------- cache


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = folder.preprocess_image

    def counting(path, **kwargs):
        calls.append(os.fspath(path))
        return original(path, **kwargs)

    monkeypatch.setattr(folder, "preprocess_image", counting)
    return calls


def _forbid_decoding(monkeypatch) -> None:
    def fail(path, **kwargs):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(folder, "preprocess_image", fail)


def test_cache_is_reused_and_invalidated(tree, tmp_path, monkeypatch, capsys):
    cache = str(tmp_path / "cache")
    kwargs = dict(cache_dir=cache, workers=1, **SMALL)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on terminals only
    first = data.load_domain(tree, "a", progress=True, **kwargs)
    assert "decoding a" in capsys.readouterr().err  # progress bar while decoding
    assert sorted(name.split(".", 1)[1] for name in os.listdir(cache)) == [
        "images.npy",
        "json",
        "labels.npy",
    ]

    with monkeypatch.context() as patch:
        _forbid_decoding(patch)
        second = data.load_domain(tree, "a", progress=True, **kwargs)
    assert capsys.readouterr().err == ""  # no progress bar from the cache
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.paths == second.paths and first.class_names == second.class_names
    assert second.images.dtype == np.uint8 and second.labels.dtype == np.int32

    # A changed file (new content and mtime) invalidates the entry and replaces it.
    changed = os.path.join(tree, first.paths[0])
    _save(changed, (40, 30), "RGB", seed=1234)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = _count_decodes(monkeypatch)
    third = data.load_domain(tree, "a", progress=False, **kwargs)
    assert len(calls) == len(first)
    assert not np.array_equal(third.images[0], first.images[0])
    np.testing.assert_array_equal(third.images[1:], first.images[1:])
    assert len(os.listdir(cache)) == 3  # the stale entry was removed

    # An added file invalidates it too.
    _save(os.path.join(tree, "a", "dog", "new.png"), (33, 40), "L", seed=7)
    calls.clear()
    fourth = data.load_domain(tree, "a", progress=False, **kwargs)
    assert len(calls) == len(first) + 1 and len(fourth) == len(first) + 1


def test_cache_key_depends_on_sizes(tree, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    data.load_domain(tree, "a", cache_dir=cache, workers=1, progress=False, resize=36, crop=32)
    calls = _count_decodes(monkeypatch)
    other = data.load_domain(
        tree, "a", cache_dir=cache, workers=1, progress=False, resize=40, crop=36
    )
    assert other.images.shape[1:] == (36, 36, 3) and len(calls) == len(other)
    calls.clear()
    square = data.load_domain(
        tree,
        "a",
        cache_dir=cache,
        workers=1,
        progress=False,
        resize=40,
        crop=36,
        resize_mode="square",
    )
    assert len(calls) == len(square) and not np.array_equal(square.images, other.images)
    assert sorted(name for name in os.listdir(cache) if name.endswith(".json"))[0].startswith(
        "a-all-36-32-"
    )
    assert any(name.startswith("a-all-40square-36-") for name in os.listdir(cache))
    calls.clear()
    data.load_domain(tree, "a", cache_dir=cache, workers=1, progress=False, resize=40, crop=36)
    assert calls == []  # the shorter-side entry is still there, beside the square one


def test_cache_remembers_bad_images(tree, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    truncated, _ = _add_bad_images(tree)
    kwargs = dict(cache_dir=cache, workers=1, progress=False, **SMALL)
    with pytest.raises(DataError, match=re.escape(truncated)):
        data.load_domain(tree, "a", **kwargs)
    _forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match=re.escape(truncated)):
        data.load_domain(tree, "a", **kwargs)
    with pytest.warns(UserWarning, match=re.escape(truncated)):
        domain = data.load_domain(tree, "a", on_bad="skip", **kwargs)
    assert len(domain) == 6


def test_cache_disabled_and_default_dir(tree, tmp_path, monkeypatch):
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("JAXDANN_CACHE_DIR", str(cache))
    assert data.default_cache_dir() == str(cache)
    data.load_domain(tree, "a", cache_dir=False, workers=1, progress=False, **SMALL)
    assert not cache.exists()
    data.load_domain(tree, "a", workers=1, progress=False, **SMALL)
    assert len(os.listdir(cache)) == 3


def test_default_root_follows_environment(monkeypatch):
    monkeypatch.delenv("JAXDANN_PACS_ROOT", raising=False)
    assert data.default_root() == os.path.join("..", "shared", "data", "PACS")
    monkeypatch.setenv("JAXDANN_PACS_ROOT", "/data/pacs")
    assert data.default_root() == "/data/pacs"


def test_load_domains_returns_each_domain(tree):
    domains = data.load_domains(tree, ["a", "b"], cache_dir=False, workers=1, progress=False)
    assert list(domains) == ["a", "b"]
    assert domains["b"].images.shape == (6, 224, 224, 3)
    assert domains["b"].class_names == ("cat", "dog", "zebra")


def test_shards_partition_a_domain_and_cache_separately(tree, tmp_path):
    cache = tmp_path / "cache"
    full = data.load_domain(tree, "b", cache_dir=False, workers=1, progress=False)
    shards = [
        data.load_domain(tree, "b", cache_dir=cache, workers=1, progress=False, shard=(i, 2))
        for i in range(2)
    ]
    assert [len(s) for s in shards] == [3, 3]
    assert shards[0].paths == full.paths[0::2] and shards[1].paths == full.paths[1::2]
    np.testing.assert_array_equal(shards[1].images, full.images[1::2])
    np.testing.assert_array_equal(shards[1].labels, full.labels[1::2])
    # Each shard keeps its own cache entry: writing shard 1 did not drop shard 0's.
    assert len([name for name in os.listdir(cache) if name.endswith(".json")]) == 2
    again = data.load_domain(tree, "b", cache_dir=cache, workers=1, progress=False, shard=(0, 2))
    np.testing.assert_array_equal(again.images, shards[0].images)
    # Nor does the whole domain's entry drop the shards' (its prefix begins theirs).
    data.load_domain(tree, "b", cache_dir=cache, workers=1, progress=False)
    assert len([name for name in os.listdir(cache) if name.endswith(".json")]) == 3
    with pytest.raises(ValueError, match="shard"):
        data.load_domain(tree, "b", cache_dir=False, progress=False, shard=(2, 2))


# --------------------------------------------------------------------------- split lists


def _write_split(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("folder", ["", "splits"])
def test_split_list_is_honoured(tree, folder):
    _write_split(
        os.path.join(tree, folder, "a_train_kfold.txt"),
        ["a/zebra/0_rgb.jpg 3", "", "a/cat/1_rgba.png 1"],
    )
    paths, labels, class_names = data.list_domain(tree, "a", split="train")
    assert paths == ["a/zebra/0_rgb.jpg", "a/cat/1_rgba.png"]
    assert labels.tolist() == [2, 0] and class_names == ("cat", "dog", "zebra")
    domain = data.load_domain(tree, "a", split="train", cache_dir=False, workers=1, **SMALL)
    assert domain.paths == tuple(paths) and len(domain) == 2


def test_split_file_missing_names_the_places_looked(tree):
    expected = os.path.join(tree, "splits", "a_test_kfold.txt")
    with pytest.raises(DataError, match=re.escape(expected) + ".*data.validation=cartoon,sketch"):
        data.list_domain(tree, "a", split="test")
    with pytest.raises(ConfigError, match="split 'validation' is not one of .*all, train"):
        data.list_domain(tree, "a", split="validation")


def test_split_lines_must_match_files_and_folders(tree):
    split_path = os.path.join(tree, "a_crossval_kfold.txt")
    _write_split(split_path, ["a/cat/0_grey.png 1", "a/cat/missing.jpg 1"])
    with pytest.raises(DataError, match=re.escape(split_path) + ".*a/cat/missing.jpg"):
        data.list_domain(tree, "a", split="crossval")
    _write_split(split_path, ["a/cat/0_grey.png 2"])
    with pytest.raises(DataError, match="disagrees.*a/cat/0_grey.png .class number 2"):
        data.list_domain(tree, "a", split="crossval")
    _write_split(split_path, ["a/cat/0_grey.png"])
    with pytest.raises(DataError, match="Line 1 of split file"):
        data.list_domain(tree, "a", split="crossval")


# --------------------------------------------------------------------------- statistics


def test_explore_counts_and_statistics(tmp_path):
    tree = _make_tree(tmp_path / "pacs", domains=("a",), classes=("bird", "cat"), per_class=1)
    for index in range(2):
        _save(os.path.join(tree, "a", "cat", f"extra{index}.png"), (20, 20), "L", index)
    _save(os.path.join(tree, "a", "dog", "x.jpg"), seed=5)
    _save(os.path.join(tree, "a", "dog", "y.jpg"), seed=6)
    stats = explore.explore(tree, ["a"])
    assert stats == {
        "a": {
            "counts": {"bird": 1, "cat": 3, "dog": 2},
            "total": 6,
            "min": 1,
            "min_class": "bird",
            "max": 3,
            "max_class": "cat",
            "mean": 2.0,
            "std": pytest.approx(np.sqrt(2 / 3)),
        }
    }


def test_main_prints_table_and_writes_plot(tree, tmp_path, capsys):
    plot = tmp_path / "counts.png"
    assert (
        explore.main(
            ["--dataset", "folder", "--root", tree, "--domains", "a,b", "--plot", str(plot)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"^cat\s+2\s+2$", out, re.MULTILINE)
    assert re.search(r"^total\s+6\s+6$", out, re.MULTILINE)
    assert re.search(r"^a\s+6\s+2 \(cat\)\s+2 \(cat\)\s+2\.00\s+0\.00$", out, re.MULTILINE)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    with Image.open(plot) as image:
        assert image.width > 300 and image.height > 200
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 4


def test_main_plots_into_a_new_folder_and_refuses_unknown_formats(tree, tmp_path, capsys):
    plot = tmp_path / "new" / "folder" / "counts.svg"
    assert (
        explore.main(
            ["--dataset", "folder", "--root", tree, "--domains", "a,b", "--plot", str(plot)]
        )
        == 0
    )
    assert plot.read_bytes().lstrip().startswith(b"<?xml")
    capsys.readouterr()
    assert (
        explore.main(
            [
                "--dataset",
                "folder",
                "--root",
                tree,
                "--domains",
                "a",
                "--plot",
                str(tmp_path / "c.txt"),
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before counting
    assert captured.err.count("\n") == 1 and "cannot write a chart as 'txt'" in captured.err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert (
        explore.main(
            [
                "--dataset",
                "folder",
                "--root",
                tree,
                "--domains",
                "a",
                "--plot",
                str(blocker / "c.png"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --plot {blocker / 'c.png'}: cannot")


def test_main_skips_non_images_when_asked(tree, capsys):
    open(os.path.join(tree, "a", "cat", "notes.txt"), "w").close()
    assert (
        explore.main(["--dataset", "folder", "--root", tree, "--domains", "a,b"]) == 1
    )  # the data, not the arguments
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err and "--on-bad skip" in err
    with pytest.warns(UserWarning, match="notes.txt"):
        assert (
            explore.main(
                ["--dataset", "folder", "--root", tree, "--domains", "a,b", "--on-bad", "skip"]
            )
            == 0
        )
    assert re.search(r"^total\s+6\s+6$", capsys.readouterr().out, re.MULTILINE)


def test_main_reports_bad_root(tmp_path, capsys):
    assert explore.main(["--root", str(tmp_path / "missing")]) == 1  # data that is not there
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- real PACS

real_pacs = pytest.mark.skipif(
    not os.path.isdir(data.default_root()),
    reason=f"PACS not found at {data.default_root()!r}; set $JAXDANN_PACS_ROOT to run this test",
)


@real_pacs
def test_real_pacs_counts_match_published_table():
    stats = explore.explore(data.default_root())
    assert list(stats) == list(data.DOMAINS)
    for domain, counts in PACS_COUNTS.items():
        assert stats[domain]["counts"] == dict(zip(PACS_CLASSES, counts, strict=True))
        assert stats[domain]["total"] == sum(counts)
    art = stats["art_painting"]
    assert (art["total"], art["min"], art["min_class"], art["max"], art["max_class"]) == (
        2048,
        184,
        "guitar",
        449,
        "person",
    )
    assert art["mean"] == pytest.approx(2048 / 7)
    assert sum(s["total"] for s in stats.values()) == 9991


@real_pacs
@pytest.mark.parametrize("domain", data.DOMAINS)
def test_real_pacs_images_decode(domain):
    root = data.default_root()
    paths, labels, class_names = data.list_domain(root, domain)
    assert class_names == PACS_CLASSES and len(paths) == sum(PACS_COUNTS[domain])
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    for index in (0, len(paths) // 2, len(paths) - 1):
        path = os.path.join(root, paths[index])
        image = data.preprocess_image(path)
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        assert image.std() > 1  # a real picture, not a blank
        with Image.open(path) as original:
            expected = np.asarray(reference(original.convert("RGB")))
        np.testing.assert_array_equal(image, expected)

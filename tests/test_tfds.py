"""The TFDS ``pacs`` builder: built and read without TensorFlow, equal to jaxdann.data's arrays."""

import importlib
import importlib.util
import os
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from jaxdann import tfds_pacs  # noqa: E402
from jaxdann.data import pacs  # noqa: E402
from jaxdann.errors import ConfigError, DataError  # noqa: E402

RESIZE, CROP = 36, 32
CLASSES = ("dog", "guitar", "house")  # sorted, so labels are their positions
# (width, height, PIL mode, extension): landscape, portrait, square, grey, palette, RGBA, JPEG.
IMAGE_KINDS = (
    (48, 40, "RGB", ".png"),
    (40, 57, "L", ".png"),
    (36, 36, "P", ".png"),
    (70, 45, "RGBA", ".png"),
    (50, 41, "RGB", ".jpg"),
)


@pytest.fixture(scope="module", autouse=True)
def scratch_tempdir(tmp_path_factory):
    """TFDS makes an empty ``tmp*tfds`` folder per builder and leaves it: keep them in tmp_path."""
    saved = tempfile.tempdir
    tempfile.tempdir = os.fspath(tmp_path_factory.mktemp("scratch"))
    yield
    tempfile.tempdir = saved


def make_tree(root, seed=0):
    """A small PACS-like tree: every domain has every class, with varied image sizes and modes."""
    rng = np.random.default_rng(seed)
    for domain_index, domain in enumerate(pacs.DOMAINS):
        for class_index, class_name in enumerate(CLASSES):
            folder = root / domain / class_name
            folder.mkdir(parents=True)
            count = 2 + (domain_index + class_index) % 2
            for image_index in range(count):
                width, height, mode, extension = IMAGE_KINDS[
                    (domain_index + class_index + image_index) % len(IMAGE_KINDS)
                ]
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                image.save(folder / f"{class_name}_{image_index}{extension}")
    return root


def download_config(root):
    return tfds.download.DownloadConfig(manual_dir=os.fspath(root), try_download_gcs=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(root, data_dir) with the dataset built once at RESIZE/CROP through tfds.data_source."""
    root = make_tree(tmp_path_factory.mktemp("pacs"))
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.data_source(
        f"pacs/resize{RESIZE}_crop{CROP}",
        split="photo",
        data_dir=os.fspath(data_dir),
        download_and_prepare_kwargs={"download_config": download_config(root)},
    )
    return root, data_dir


def test_tensorflow_is_not_imported(built):
    root, data_dir = built
    tfds_pacs.load_domains_tfds(root, pacs.DOMAINS, resize=RESIZE, crop=CROP, data_dir=data_dir)
    assert "tensorflow" not in sys.modules
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed here, so this run cannot show TFDS works without it")


def test_data_source_records_are_preprocessed_files(built):
    root, data_dir = built
    source = tfds.data_source(
        f"pacs/resize{RESIZE}_crop{CROP}",
        split="photo",
        data_dir=os.fspath(data_dir),
        download=False,
    )
    paths, _, _ = pacs.list_domain(root, "photo")
    assert len(source) == len(paths) == 7
    seen = set()
    for index in range(len(source)):
        record = source[index]
        path = record["path"].decode()
        seen.add(path)
        assert record["image"].dtype == np.uint8
        np.testing.assert_array_equal(
            record["image"], pacs.preprocess_image(root / path, resize=RESIZE, crop=CROP)
        )
        assert record["label"] == CLASSES.index(path.split("/")[1])
    assert seen == set(paths)
    assert source.dataset_info.features["label"].names == list(CLASSES)


def test_splits_and_configs(built):
    _, data_dir = built
    # A prepared config is read from its files (TFDS does that for configs named at run time).
    builder = tfds.builder(f"pacs/resize{RESIZE}_crop{CROP}", data_dir=os.fspath(data_dir))
    assert builder.builder_config.name == f"resize{RESIZE}_crop{CROP}"
    assert sorted(builder.info.splits) == sorted(pacs.DOMAINS)
    assert builder.info.splits["sketch"].num_examples == 8
    assert builder.info.features["image"].shape == (CROP, CROP, 3)
    unbuilt = tfds.builder("pacs/resize40_crop38", data_dir=os.fspath(data_dir)).builder_config
    assert (unbuilt.resize, unbuilt.crop, unbuilt.on_bad) == (40, 38, "error")
    default = tfds.builder("pacs", data_dir=os.fspath(data_dir)).builder_config
    assert (default.name, default.resize, default.crop) == ("resize256_crop224", 256, 224)
    assert tfds_pacs.config_name(RESIZE, CROP, on_bad="skip") == "resize36_crop32_skipbad"
    with pytest.raises(ValueError, match="crop <= resize"):
        tfds_pacs.config_name(32, 36)
    with pytest.raises(ValueError, match="crop <= resize"):
        tfds.builder("pacs/resize32_crop36", data_dir=os.fspath(data_dir))
    with pytest.raises(ValueError, match="not found"):
        tfds.builder("pacs/small", data_dir=os.fspath(data_dir))


def test_load_domains_tfds_equals_load_domain(built):
    root, data_dir = built
    domains = tfds_pacs.load_domains_tfds(
        root, ["art_painting", "sketch"], resize=RESIZE, crop=CROP, data_dir=data_dir
    )
    assert list(domains) == ["art_painting", "sketch"]
    for name, domain in domains.items():
        expected = pacs.load_domain(
            root, name, resize=RESIZE, crop=CROP, cache_dir=False, progress=False
        )
        assert domain.name == name
        assert domain.class_names == expected.class_names == CLASSES
        assert domain.images.dtype == np.uint8 and domain.labels.dtype == np.int32
        # Stored in list_domain's order, so the arrays are equal as they are.
        assert domain.paths == expected.paths
        np.testing.assert_array_equal(domain.labels, expected.labels)
        np.testing.assert_array_equal(domain.images, expected.images)


def test_load_domains_tfds_reads_one_shard(built):
    root, data_dir = built
    kwargs = {"resize": RESIZE, "crop": CROP, "data_dir": data_dir}
    full = tfds_pacs.load_domains_tfds(root, ["cartoon"], **kwargs)["cartoon"]
    shard = tfds_pacs.load_domains_tfds(root, ["cartoon"], shard=(1, 2), **kwargs)["cartoon"]
    assert shard.paths == full.paths[1::2]
    np.testing.assert_array_equal(shard.images, full.images[1::2])
    np.testing.assert_array_equal(shard.labels, full.labels[1::2])
    # A limit reads the records the folder reader decodes for the same limit.
    limited = tfds_pacs.load_domains_tfds(root, ["cartoon"], shard=(1, 2), limit=3, **kwargs)
    expected = pacs.load_domain(
        root, "cartoon", resize=RESIZE, crop=CROP, cache_dir=False, shard=(1, 2), limit=3
    )
    assert len(limited["cartoon"]) == 2 and limited["cartoon"].paths == expected.paths
    np.testing.assert_array_equal(limited["cartoon"].images, expected.images)


def test_the_pacs_dataset_reads_tfds(built, monkeypatch):
    root, data_dir = built
    from jaxdann import config as config_lib
    from jaxdann.data import DATASETS

    read = tfds_pacs.load_domains_tfds
    monkeypatch.setattr(
        tfds_pacs, "load_domains_tfds", lambda *a, **k: read(*a, data_dir=data_dir, **k)
    )
    data = config_lib.base_config().data
    data.update({"format": "tfds", "root": os.fspath(root), "resize": RESIZE, "crop": CROP})
    loaded = DATASETS.get("pacs").load("photo", "all", data, limit=4)
    expected = pacs.load_domain(root, "photo", resize=RESIZE, crop=CROP, cache_dir=False, limit=4)
    assert loaded.paths == expected.paths
    np.testing.assert_array_equal(loaded.images, expected.images)
    with pytest.raises(ConfigError, match="data.format=tfds reads whole domains"):
        DATASETS.get("pacs").load("photo", "train", data)


def test_command_line(built, capsys):
    root, data_dir = built
    args = ["--root", os.fspath(root), "--data_dir", os.fspath(data_dir)]
    assert tfds_pacs.main([*args, "--resize", str(RESIZE), "--crop", str(CROP)]) == 0
    assert "pacs/resize36_crop32: art_painting 7, cartoon 8, photo 7, sketch 8" in (
        capsys.readouterr().out
    )
    assert tfds_pacs.main([*args, "--resize", "32", "--crop", "36"]) == 2
    assert "crop <= resize" in capsys.readouterr().err


def test_bad_image_is_reported(tmp_path):
    root = make_tree(tmp_path / "pacs")
    (root / "cartoon" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError, match=r"1 images .*cartoon/dog/broken\.jpg.*on_bad='skip'"):
        tfds_pacs.load_domains_tfds(root, ["photo"], resize=RESIZE, crop=CROP, data_dir=data_dir)
    assert not list((data_dir / "pacs").glob("*/*/dataset_info.json"))  # nothing half-built

    with pytest.warns(UserWarning, match=r"broken\.jpg.*skipping them"):
        domains = tfds_pacs.load_domains_tfds(
            root, ["cartoon"], resize=RESIZE, crop=CROP, data_dir=data_dir, on_bad="skip"
        )
    assert len(domains["cartoon"]) == 8  # broken.jpg left out
    assert "cartoon/dog/broken.jpg" not in domains["cartoon"].paths


def test_dataset_built_from_other_files_is_reported(tmp_path):
    root = make_tree(tmp_path / "pacs")
    data_dir = tmp_path / "tfds"
    tfds_pacs.load_domains_tfds(root, ["photo"], resize=RESIZE, crop=CROP, data_dir=data_dir)
    Image.new("RGB", (40, 40)).save(root / "photo" / "house" / "new.png")
    with pytest.raises(DataError, match=r"other files .*photo/house/new\.png.*delete"):
        tfds_pacs.load_domains_tfds(root, ["photo"], resize=RESIZE, crop=CROP, data_dir=data_dir)
    # A shard alone is a subset of the files either way: the record count still tells.
    with pytest.raises(DataError, match=r"other files"):
        tfds_pacs.load_domains_tfds(
            root, ["photo"], resize=RESIZE, crop=CROP, data_dir=data_dir, shard=(0, 2)
        )


def test_missing_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes its import fail
    monkeypatch.delitem(sys.modules, "jaxdann.tfds_pacs")
    with pytest.raises(ImportError, match=r"pip install 'jaxdann\[tfds\]'"):
        importlib.import_module("jaxdann.tfds_pacs")


def test_split_too_big_for_tensorflow_free_tfds_is_refused():
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed here, so TFDS can write any split size")
    tfds_pacs._check_fits_in_memory("sketch", 3929, 224)  # real PACS's largest domain fits
    with pytest.raises(DataError, match=r"'sketch' has 9000 images.*smaller crop"):
        tfds_pacs._check_fits_in_memory("sketch", 9000, 224)

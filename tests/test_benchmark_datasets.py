"""The standard benchmarks' readers on small trees written in each official layout: Office-31,
Office-Home, DomainNet, VisDA-2017, any folder, PACS's split lists, several sources, and the bad
data each one refuses in one sentence."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxdann import config as config_lib
from jaxdann.data import DATASETS, explore, image_list, pipeline
from jaxdann.data.folder import preprocess_image
from jaxdann.errors import ConfigError, DataError, exit_code

CLASSES = ("bike", "cup", "pen")  # sorted: labels 0, 1, 2


def _image(path, seed: int, size=(20, 16)) -> str:
    """A small random JPEG or PNG (by extension) whose pixels depend on ``seed``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def _class_tree(folder, per_class=(2, 3, 1), seed=0, ext="jpg") -> list[str]:
    """``folder/<class>/<i>.<ext>``; the files relative to ``folder``, class by class."""
    files = []
    for name, count in zip(CLASSES, per_class, strict=True):
        for index in range(count):
            _image(os.path.join(folder, name, f"{index}.{ext}"), seed + 10 * len(files))
            files.append(f"{name}/{index}.{ext}")
    return files


def _write_list(path, lines) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return str(path)


def _config(name: str, root, cache, **overrides):
    settings = {
        "data.name": name,
        "data.root": str(root),
        "data.validation": "none",
        "data.resize": "12",
        "data.crop": "12",
        "data.cache_dir": str(cache),
    }
    config = config_lib.base_config()
    return config_lib.apply_overrides(config, settings | overrides)


# --------------------------------------------------------------------------- Office-31


@pytest.fixture
def office31(tmp_path):
    root = tmp_path / "office31"
    for index, domain in enumerate(("amazon", "dslr", "webcam")):
        _class_tree(root / domain / "images", (2, 3, 1 + index), seed=index)
    return root


def test_office31_reads_domain_images_class_folders(office31, tmp_path):
    config = _config("office31", office31, tmp_path / "cache")
    config.data.source, config.data.target = "amazon", "webcam"
    data = pipeline.load_experiment_data(config)
    assert data.class_names == CLASSES
    assert len(data.source) == 6 and len(data.target) == 8 and data.target_eval is data.target
    assert data.source.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert data.source.images.shape == (6, 12, 12, 3)
    loaded = DATASETS.get("office31").load("amazon", "all", config.data, progress=False)
    assert loaded.paths[0] == "amazon/images/bike/0.jpg"


def test_office31_without_its_images_folder_names_the_layout(tmp_path):
    root = tmp_path / "flat"
    _class_tree(root / "amazon")  # the classes straight in the domain folder
    _class_tree(root / "webcam")
    config = _config("office31", root, tmp_path / "cache")
    config.data.source, config.data.target = "amazon", "webcam"
    with pytest.raises(DataError) as raised:
        pipeline.load_experiment_data(config)
    message = str(raised.value)
    assert "amazon/images" in message and "ROOT/<domain>/images/<class>/<image>" in message
    assert message.count("\n") == 0 and exit_code(raised.value) == 1


def test_a_domain_missing_from_the_root_is_named(office31, tmp_path):
    os.rename(office31 / "dslr", tmp_path / "elsewhere")
    config = _config("office31", office31, tmp_path / "cache")
    config.data.source, config.data.target = "amazon", "dslr"
    with pytest.raises(DataError, match=r"dslr/images' is not a folder.*holds amazon, webcam"):
        pipeline.load_experiment_data(config)


# --------------------------------------------------------------------------- Office-Home


@pytest.mark.parametrize("folder", ["Real World", "Real_World"])
def test_office_home_reads_real_world_with_its_space(tmp_path, folder):
    root = tmp_path / "office_home"
    for index, domain in enumerate(("Art", "Clipart", "Product", folder)):
        _class_tree(root / domain, (1, 1, 1 + index), seed=index)
    config = _config("office_home", root, tmp_path / "cache")
    config.data.source, config.data.target = "Art", "Real World"
    data = pipeline.load_experiment_data(config)
    assert (len(data.source), len(data.target)) == (3, 6)
    with pytest.raises(ConfigError, match="choose one of Art, Clipart, Product, Real World"):
        config_lib.validate(config_lib.apply_overrides(config, {"data.target": "RealWorld"}))


# --------------------------------------------------------------------------- DomainNet


@pytest.fixture
def domainnet(tmp_path):
    """clipart and sketch with train and test lists in the root (sketch's in image_list/)."""
    root = tmp_path / "domainnet"
    for index, domain in enumerate(("clipart", "sketch")):
        files = [f"{domain}/{f}" for f in _class_tree(root / domain, (3, 3, 3), seed=index)]
        labels = [CLASSES.index(f.split("/")[1]) for f in files]
        lines = [f"{f} {label}" for f, label in zip(files, labels, strict=True)]
        folder = root if domain == "clipart" else root / "image_list"
        _write_list(folder / f"{domain}_train.txt", lines[0::3] + lines[1::3])
        _write_list(folder / f"{domain}_test.txt", lines[2::3])
    return root


def test_domainnet_trains_on_train_lists_and_measures_the_target_test_list(domainnet, tmp_path):
    config = _config("domainnet", domainnet, tmp_path / "cache")
    config.data.source, config.data.target = "clipart", "sketch"
    data = pipeline.load_experiment_data(config)
    assert (len(data.source), len(data.target), len(data.target_eval)) == (6, 6, 3)
    assert data.target_eval.labels.tolist() == [0, 1, 2]
    assert sorted(data.source.labels.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    "line,message",
    [
        ("clipart/cup/9.jpg 1", r"1 files listed in image list .*clipart_test.txt.*clipart/cup/9"),
        ("clipart/cup/0.jpg 7", r"clipart_test.txt' use class numbers outside 0..2 .*: 7;"),
        ("clipart/cup/0.jpg 0", r"one class number to images of several folders \(0: bike, cup\)"),
        ("clipart/cup/0.jpg", r"Line 4 of image list .*clipart_test.txt"),
    ],
)
def test_domainnet_lists_that_do_not_fit_are_one_sentence(domainnet, tmp_path, line, message):
    with open(domainnet / "clipart_test.txt", "a") as handle:
        handle.write(line + "\n")
    config = _config("domainnet", domainnet, tmp_path / "cache")
    config.data.source, config.data.target = "sketch", "clipart"
    with pytest.raises(DataError, match=message) as raised:
        pipeline.load_experiment_data(config)
    assert str(raised.value).count("\n") == 0


def test_domainnet_without_its_lists_says_where_it_looked(domainnet, tmp_path):
    os.remove(domainnet / "clipart_train.txt")
    config = _config("domainnet", domainnet, tmp_path / "cache")
    config.data.source, config.data.target = "clipart", "sketch"
    expected = re.escape(str(domainnet / "image_list" / "clipart_train.txt"))
    with pytest.raises(DataError, match=f"clipart_train.txt not found .*{expected}"):
        pipeline.load_experiment_data(config)


def test_domainnet_classes_follow_its_lists_not_sorted_names(tmp_path):
    root = tmp_path / "domainnet"
    order = ("tent", "The_Eiffel_Tower", "tiger")  # DomainNet's order; sorted() puts The_ first
    for domain in ("real", "sketch"):
        lines = []
        for label, name in enumerate(order):
            _image(root / domain / name / "0.jpg", label)
            lines.append(f"{domain}/{name}/0.jpg {label}")
        _write_list(root / f"{domain}_train.txt", lines)
        _write_list(root / f"{domain}_test.txt", lines[:1])
    config = _config("domainnet", root, tmp_path / "cache")
    config.data.source, config.data.target = "real", "sketch"
    data = pipeline.load_experiment_data(config)
    assert data.class_names == order and data.source.labels.tolist() == [0, 1, 2]
    assert data.target_eval.labels.tolist() == [0]


def test_a_folder_given_two_class_numbers_is_named_with_its_list(tmp_path):
    lines = ["real/a/0.jpg 0", "real/b/0.jpg 1", "real/a/1.jpg 2"]
    path = _write_list(tmp_path / "real_train.txt", lines)
    message = rf"folder several class numbers \('a': 0 in '{re.escape(path)}', 2 in '"
    with pytest.raises(DataError, match=message) as raised:
        image_list.classes_from_lists([path], ("a", "b", "c"))
    assert str(raised.value).count("\n") == 0
    assert "'b'" not in str(raised.value)
    fixed = _write_list(tmp_path / "fixed.txt", ["real/c/0.jpg 0", "real/a/0.jpg 2"])
    assert image_list.classes_from_lists([fixed], ("a", "b", "c")) == ("c", "b", "a")


# --------------------------------------------------------------------------- VisDA-2017


@pytest.fixture
def visda(tmp_path):
    root = tmp_path / "visda"
    for index, domain in enumerate(("train", "validation")):
        ext = "png" if domain == "train" else "jpg"
        files = _class_tree(root / domain, (2, 2, 2), seed=index, ext=ext)
        lines = [f"{f} {CLASSES.index(f.split('/')[0])}" for f in files]
        _write_list(root / domain / "image_list.txt", lines[:-1])  # one image left unlisted
    return root


def test_visda_reads_each_domain_from_its_image_list(visda, tmp_path):
    config = _config("visda2017", visda, tmp_path / "cache")
    config.data.source, config.data.target = "train", "validation"
    data = pipeline.load_experiment_data(config)
    assert len(data.source) == len(data.target) == 5
    assert data.source.labels.tolist() == [0, 0, 1, 1, 2]
    os.remove(visda / "validation" / "image_list.txt")
    with pytest.raises(DataError, match=r"validation/image_list.txt' does not exist: the VisDA"):
        pipeline.load_experiment_data(config)


# --------------------------------------------------------------------------- any folder


def test_folder_reads_any_tree_and_names_its_domains(tmp_path):
    root = tmp_path / "mine"
    _class_tree(root / "day")
    _class_tree(root / "night", (1, 1, 1))
    config = _config("folder", root, tmp_path / "cache")
    config.data.source, config.data.target = "day", "night"
    data = pipeline.load_experiment_data(config)
    assert (len(data.source), len(data.target)) == (6, 3)
    with pytest.raises(ConfigError, match="data.target='dusk' is not a domain .* day, night"):
        config_lib.validate(config_lib.apply_overrides(config, {"data.target": "dusk"}))
    (root / "dusk").mkdir()  # an empty domain
    config.data.target = "dusk"
    with pytest.raises(DataError, match="dusk' has no class folders"):
        pipeline.load_experiment_data(config)
    (tmp_path / "empty").mkdir()
    config.data.root = str(tmp_path / "empty")
    with pytest.raises(DataError, match="empty' holds no domain folders.*<domain>/<class>"):
        config_lib.validate(config)


def test_data_resize_mode_square_reaches_the_decoder(tmp_path):
    root = tmp_path / "mine"
    files = _class_tree(root / "day")
    _class_tree(root / "night", (1, 1, 1))
    config = _config("folder", root, tmp_path / "cache", **{"data.resize_mode": "square"})
    config.data.source, config.data.target = "day", "night"
    config_lib.validate(config)
    loaded = pipeline.load_experiment_data(config).source
    first = os.path.join(root, "day", files[0])
    expected = preprocess_image(first, resize=12, crop=12, resize_mode="square")
    np.testing.assert_array_equal(loaded.images[0], expected)
    assert expected.shape == (12, 12, 3)  # the whole 20 x 16 image, squeezed, not cropped
    config.data.format = "tfds"
    with pytest.raises(ConfigError, match="data.resize_mode=square needs data.format=folder"):
        config_lib.validate(config)


def test_every_unreadable_image_is_named(tmp_path):
    root = tmp_path / "mine"
    _class_tree(root / "day")
    _class_tree(root / "night")
    for name in ("bike/0.jpg", "pen/0.jpg"):
        (root / "night" / name).write_bytes(b"not an image")
    config = _config("folder", root, tmp_path / "cache")
    config.data.source, config.data.target = "day", "night"
    with pytest.raises(DataError, match=r"2 images .*bike/0.jpg .*pen/0.jpg"):
        pipeline.load_experiment_data(config)


# --------------------------------------------------------------------------- PACS, sources


def test_pacs_source_holdout_reads_the_official_kfold_lists(tmp_path, write_pacs_tree):
    root = tmp_path / "PACS"
    write_pacs_tree(root, ("photo", "sketch", "cartoon"), per_class=4)
    for domain in ("photo", "cartoon"):
        files = [
            f"{domain}/{c}/{i}.png {1 + k}" for k, c in enumerate(("cat", "dog")) for i in range(4)
        ]
        _write_list(root / f"{domain}_train_kfold.txt", files[1:4] + files[5:])
        _write_list(root / f"{domain}_crossval_kfold.txt", [files[0], files[4]])
    config = _config("pacs", root, tmp_path / "cache", **{"data.validation": "source_holdout"})
    config.data.source, config.data.target = "photo,cartoon", "sketch"
    data = pipeline.load_experiment_data(config)
    assert (len(data.source), len(data.validation), len(data.target)) == (12, 4, 8)
    assert data.validation.labels.tolist() == [0, 1, 0, 1]
    counts = explore.explore(root, ["photo", "sketch"], dataset="pacs")
    assert {k: v["total"] for k, v in counts.items()} == {
        "photo": 8,
        "photo/train": 6,
        "photo/crossval": 2,
        "sketch": 8,
    }
    office = _config(
        "office31", tmp_path, tmp_path / "cache", **{"data.validation": "source_holdout"}
    )
    office.data.source, office.data.target = "amazon", "dslr"
    with pytest.raises(ConfigError, match="office31 dataset has no source hold-out lists"):
        config_lib.validate(office)


def test_several_sources_train_on_their_union(tmp_path, write_pacs_tree):
    root = tmp_path / "PACS"
    write_pacs_tree(root, ("photo", "cartoon", "sketch"), per_class=3)
    config = _config("pacs", root, tmp_path / "cache")
    config.data.source, config.data.target = "photo,cartoon", "sketch"
    union = pipeline.load_experiment_data(config)
    config.data.source = "photo"
    photo = pipeline.load_experiment_data(config)
    config.data.source = "cartoon"
    cartoon = pipeline.load_experiment_data(config)
    np.testing.assert_array_equal(
        union.source.images, np.concatenate([photo.source.images, cartoon.source.images])
    )
    np.testing.assert_array_equal(
        union.source.labels, np.concatenate([photo.source.labels, cartoon.source.labels])
    )
    for source, message in (
        ("photo,photo", "names a domain twice"),
        ("photo,sketch", "data.source and data.target both name 'sketch'"),
        ("photo,clipart", "data.source='clipart' is not a domain of the pacs"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_lib.validate(config_lib.apply_overrides(config, {"data.source": source}))


# --------------------------------------------------------------------------- the data command


def test_the_data_command_counts_splits_and_names_unreadable_files(domainnet, capsys):
    argv = ["--dataset", "domainnet", "--root", str(domainnet)]
    assert explore.main(argv) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[2].split()
    assert header == ["class", "clipart/train", "clipart/test", "sketch/train", "sketch/test"]
    assert re.search(r"^bike\s+2\s+1\s+2\s+1$", out, re.MULTILINE)
    (domainnet / "sketch" / "pen" / "0.jpg").write_bytes(b"\xff\xd8 broken")
    assert explore.main(argv) == 1
    captured = capsys.readouterr()
    assert "1 files cannot be read:" in captured.out and "sketch/pen/0.jpg" in captured.out
    assert captured.err.count("\n") == 1 and "cannot be read" in captured.err
    assert explore.main(["--dataset", "office", "--root", str(domainnet)]) == 2


def test_the_data_command_names_a_truncated_jpeg(tmp_path, capsys):
    root = tmp_path / "mine"
    _class_tree(root / "day")
    path = _image(root / "day" / "cup" / "1.jpg", 5, size=(64, 48))  # half is past the header
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with Image.open(path) as image:
        assert image.size == (64, 48)  # its header still reads
    assert explore.main(["--dataset", "folder", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1 files cannot be read:" in out
    assert re.search(r"day/cup/1\.jpg \(OSError: image file is truncated", out)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "name,dataset,figure",
    [
        ("office31_dann", "office31", "0.730"),
        ("office_home_dann", "office_home", "0.538"),
        ("domainnet_dann", "domainnet", "0.442"),
        ("visda2017_dann", "visda2017", "0.749"),
        ("mnist_mnistm_dann", "digits", "0.7666"),
    ],
)
def test_the_benchmark_configs_validate_and_say_their_command_and_figure(name, dataset, figure):
    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs", f"{name}.py")
    config = config_lib.load_config(path)
    config_lib.validate(config)
    assert config.data.name == dataset and config.adaptation == "dann"
    with open(path) as handle:
        docstring = handle.read().split('"""')[1]
    assert f"python -m jaxdann.train --config configs/{name}.py" in docstring
    assert figure in docstring

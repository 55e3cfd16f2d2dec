"""The Dataset seam: the registry, domain-name errors, limited loads and progress lines."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.data import DATASETS, ImageFolder, folder, pacs, pipeline
from jaxdann.data.dataset import select_rows
from jaxdann.errors import ConfigError, DataError, exit_code


@pytest.fixture
def tree(tmp_path, write_pacs_tree):
    """photo/ and sketch/, classes cat and dog, 6 images each: 12 per domain."""
    write_pacs_tree(tmp_path / "pacs")
    return tmp_path / "pacs"


@pytest.fixture(name="make_config")
def make_config_fixture(tiny_pacs_overrides):
    """``make_config(root, cache_dir, **overrides)``: the base config on a tiny tree."""

    def make_config(root, cache_dir, **overrides):
        settings = {**tiny_pacs_overrides(root, cache_dir), **overrides}
        return config_lib.apply_overrides(config_lib.base_config(), settings)

    return make_config


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = folder.preprocess_image

    def counting(path, **kwargs):
        calls.append(os.fspath(path))
        return original(path, **kwargs)

    monkeypatch.setattr(folder, "preprocess_image", counting)
    return calls


def _old_limit(count: int, limit: int) -> np.ndarray:
    """The rows a limited run kept when it cut the decoded arrays (stream 3, sorted)."""
    return np.sort(np.random.default_rng(3).permutation(count)[:limit])


# --------------------------------------------------------------------------- the registry


def test_the_registry_names_every_dataset():
    assert DATASETS.names() == (
        "pacs",
        "demo",
        "digits",
        "office31",
        "office_home",
        "domainnet",
        "visda2017",
        "folder",
    )
    assert DATASETS.get("pacs").domains == pacs.DOMAINS
    assert DATASETS.get("demo").domains[0] == "digits"
    assert DATASETS.get("digits").domains == ("mnist", "usps", "svhn", "mnist_m")
    with pytest.raises(ConfigError, match="data.name='office'.*pacs, demo, digits") as raised:
        DATASETS.get("office")
    assert exit_code(raised.value) == 2


def test_pacs_loads_a_domain_as_the_folder_reader_does(make_config, tree, tmp_path):
    config = make_config(tree, tmp_path / "cache")
    dataset = DATASETS.get("pacs")
    assert dataset.class_names(config.data, ["photo", "sketch"]) == ("cat", "dog")
    loaded = dataset.load("photo", "all", config.data, progress=False)
    expected = pacs.load_domain(tree, "photo", resize=36, crop=32, cache_dir=False)
    assert loaded.paths == expected.paths and loaded.class_names == ("cat", "dog")
    np.testing.assert_array_equal(loaded.images, expected.images)
    np.testing.assert_array_equal(loaded.labels, expected.labels)
    with pytest.raises(ConfigError, match="split 'valid' .* all, train, crossval, test"):
        dataset.load("photo", "valid", config.data)
    with pytest.raises(ConfigError, match="domain 'dogs' .* art_painting, cartoon, photo"):
        dataset.load("dogs", "all", config.data)


def test_a_folder_dataset_is_a_subclass_and_a_registry_line(
    make_config, tmp_path, monkeypatch, write_pacs_tree
):
    class Sketches(ImageFolder):
        name = "sketches"
        domains = ("photo", "sketch")
        root_variable = "JAXDANN_SKETCHES_ROOT"

    write_pacs_tree(tmp_path / "sketches")
    monkeypatch.setenv("JAXDANN_SKETCHES_ROOT", str(tmp_path / "sketches"))
    monkeypatch.setitem(DATASETS._entries, "sketches", Sketches())
    config = make_config("", tmp_path / "cache", **{"data.validation": "none"})
    config.data.name = "sketches"
    data = pipeline.load_experiment_data(config)
    assert len(data.source) == len(data.target) == 12 and data.class_names == ("cat", "dog")
    assert data.target_eval is data.target and data.mean == pacs.IMAGENET_MEAN
    config.data.target = "art_painting"
    with pytest.raises(ConfigError, match="not a domain of the sketches dataset; .*photo, sketch"):
        pipeline.load_experiment_data(config)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"data.target": "nonexistent"}, "data.target='nonexistent' is not a domain of the pacs"),
        ({"data.source": "Photo"}, "data.source='Photo' is not a domain of the pacs"),
        ({"data.validation": "cartoon,clipart"}, "data.validation='clipart' is not a domain"),
        ({"data.validation": "photo"}, "data.validation lists 'photo', which is the source"),
        ({"data.target": "photo"}, "data.source and data.target both name 'photo'"),
    ],
)
def test_domain_names_are_settings_errors(make_config, tree, tmp_path, overrides, message):
    config = make_config(tree, tmp_path / "cache", **overrides)
    with pytest.raises(ConfigError, match=message) as raised:
        pipeline.load_experiment_data(config)
    assert exit_code(raised.value) == 2
    if "not a domain" in message:
        assert "choose one of art_painting, cartoon, photo, sketch" in str(raised.value)
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded


def test_digits_names_are_settings_errors():
    config = config_lib.apply_overrides(config_lib.demo_config(), {"data.target": "mnist_m"})
    with pytest.raises(ConfigError, match="data.target='mnist_m' .* digits_textured, digits_noise"):
        pipeline.load_experiment_data(config)
    demo = DATASETS.get("demo")
    with pytest.raises(ConfigError, match="domain 'digits' has the splits train, validation"):
        demo.load("digits", "test", config_lib.demo_config().data)


def test_unreadable_images_stay_data_errors(make_config, tree, tmp_path):
    (tree / "sketch" / "dog" / "broken.png").write_bytes(b"not a png")
    config = make_config(tree, tmp_path / "cache")
    with pytest.raises(DataError, match=r"broken\.png") as raised:
        pipeline.load_experiment_data(config)
    assert exit_code(raised.value) == 1
    missing = make_config(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DataError, match="nowhere.*JAXDANN_PACS_ROOT"):
        pipeline.load_experiment_data(missing)


# --------------------------------------------------------------------------- limited loads


def test_a_limited_load_decodes_only_its_images(make_config, tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    whole = pipeline.load_experiment_data(make_config(tree, cache))
    calls = _count_decodes(monkeypatch)
    limited = pipeline.load_experiment_data(make_config(tree, cache, **{"data.limit": "5"}))
    # 5 of the 12 images of each domain decoded, no more; and only they are cached for it.
    assert len(calls) == 10
    assert {os.path.relpath(path, tree).split(os.sep)[0] for path in calls} == {"photo", "sketch"}
    entries = [name for name in os.listdir(cache) if name.endswith("images.npy")]
    sizes = sorted((len(np.load(cache / name)), "-limited-" in name) for name in entries)
    assert sizes == [(5, True), (5, True), (12, False), (12, False)]
    # The images a limited run used when it cut the decoded domains: the same.
    keep = _old_limit(12, 5)
    for name in ("source", "target"):
        expected = getattr(whole, name)
        np.testing.assert_array_equal(getattr(limited, name).images, expected.images[keep])
        np.testing.assert_array_equal(getattr(limited, name).labels, expected.labels[keep])
    # Both read from the cache now: writing one entry did not drop the other.
    calls.clear()
    again = pipeline.load_experiment_data(make_config(tree, cache, **{"data.limit": "5"}))
    assert np.array_equal(again.fingerprint, limited.fingerprint)
    pipeline.load_experiment_data(make_config(tree, cache))
    assert calls == []
    # Another limit replaces the limited entries rather than adding more.
    pipeline.load_experiment_data(make_config(tree, cache, **{"data.limit": "3"}))
    assert len(calls) == 6 and len(os.listdir(cache)) == 12


def test_a_limited_shard_selects_as_before(make_config, tree, tmp_path):
    config = make_config(tree, tmp_path / "cache", **{"data.limit": "4"})
    whole = pipeline.load_experiment_data(make_config(tree, tmp_path / "cache"))
    shard = pipeline.load_experiment_data(config, shard=(1, 2))
    share = whole.source.images[1::2]  # 6 images; ceil(4 / 2) of them
    np.testing.assert_array_equal(shard.source.images, share[_old_limit(6, 2)])
    np.testing.assert_array_equal(select_rows(12, (1, 2), 4), np.arange(1, 12, 2)[_old_limit(6, 2)])
    assert select_rows(12, (0, 1), 20).tolist() == list(range(12))


def test_preloaded_domains_give_the_same_data(make_config, tree, tmp_path, monkeypatch):
    config = make_config(tree, tmp_path / "cache", **{"data.limit": "7"})
    loaded = pipeline.load_domains(config, ["photo", "sketch"])
    assert [len(domain) for domain in loaded.values()] == [7, 7]
    calls = _count_decodes(monkeypatch)
    reused = pipeline.load_experiment_data(config, domains=loaded)
    assert calls == []
    direct = pipeline.load_experiment_data(config)
    np.testing.assert_array_equal(reused.fingerprint, direct.fingerprint)
    with pytest.raises(ConfigError, match="domain 'clipart' is not a domain of the pacs"):
        pipeline.load_domains(config, ["photo", "clipart"])


# --------------------------------------------------------------------------- progress


def test_long_decodes_write_progress_lines_when_stderr_is_not_a_terminal(tree, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(folder, "PROGRESS_INTERVAL", 0.0)  # every chunk counts as long
    folder.load_domain(tree, "photo", resize=36, crop=32, cache_dir=False, workers=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("decoding photo: ") and "/12 images (" in lines[0]
    assert lines[-1].startswith("decoding photo: 12 images in ")
    assert not any("\r" in line or "it/s" in line for line in lines)  # no terminal bar

    folder.load_domain(tree, "photo", resize=36, crop=32, cache_dir=False, progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(folder, "PROGRESS_INTERVAL", 3600.0)  # a short decode writes nothing
    folder.load_domain(tree, "photo", resize=36, crop=32, cache_dir=False)
    assert capsys.readouterr().err == ""

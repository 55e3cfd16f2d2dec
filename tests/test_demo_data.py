"""The embedded demo's data: fixed splits; extra renderings touch the unlabelled target set only."""

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.data.demo import make_digits_splits


def same_digits(a, b):
    """Mean |pixel correlation| of paired renderings, and of pairs shifted by one image.

    ``|patch - digit|`` makes ink brighter or darker than its background, depending on the patch,
    so two renderings of one digit correlate strongly in absolute value; of two digits, less.
    """

    def standardised(images):
        x = images.astype(np.float32).mean(-1).reshape(len(images), -1)
        x -= x.mean(1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    a, b = standardised(a), standardised(b)
    return np.abs((a * b).sum(1)).mean(), np.abs((a * np.roll(b, 1, axis=0)).sum(1)).mean()


@pytest.mark.parametrize("target", ["digits_textured", "digits_noise", "digits_textured_dev"])
def test_extra_renderings_add_target_train_images_only(target):
    once = make_digits_splits(28, target)
    thrice = make_digits_splits(28, target, target_renderings=3)
    n = len(once.target_train[1])
    assert thrice.target_train[0].shape == (3 * n, 28, 28, 3)
    # The first rendering, the test set and the source splits are those of one rendering.
    np.testing.assert_array_equal(thrice.target_train[0][:n], once.target_train[0])
    for name in ("target_test", "source_train", "source_validation"):
        for a, b in zip(getattr(once, name), getattr(thrice, name), strict=True):
            np.testing.assert_array_equal(a, b)
    # The same digit instances, on other backgrounds, each rendering its own.
    np.testing.assert_array_equal(thrice.target_train[1], np.tile(once.target_train[1], 3))
    renderings = [thrice.target_train[0][k * n : (k + 1) * n] for k in range(3)]
    for first, second in ((0, 1), (0, 2), (1, 2)):
        a, b = renderings[first], renderings[second]
        assert np.abs(a.astype(np.int16) - b).mean() > 10
        paired, shifted = same_digits(a, b)
        # digits_noise's grained colour fields nearly drown the digits (source-only accuracy on
        # it is 0.16), so its pairs correlate only a little more than mismatched ones.
        margin = 0.02 if target == "digits_noise" else 0.15
        assert paired > shifted + margin, (first, second, paired, shifted)


def test_renderings_are_validated():
    with pytest.raises(ValueError, match="data.target_renderings"):
        make_digits_splits(28, "digits_textured", target_renderings=0)
    demo = config_lib.apply_overrides(config_lib.demo_config(), {"data.target_renderings": "0"})
    with pytest.raises(config_lib.ConfigError, match="data.target_renderings"):
        config_lib.validate(demo)
    pacs = config_lib.apply_overrides(config_lib.base_config(), {"data.target_renderings": "4"})
    with pytest.raises(config_lib.ConfigError, match="digits demo .data.name=demo. only"):
        config_lib.validate(pacs)


def test_photo_like_development_domain_never_uses_target_test_digits_or_labels():
    demo = make_digits_splits(28, "digits_textured")
    dev = make_digits_splits(28, "digits_textured_dev")
    # Unlabelled training images: the target-train digits, on other views of the photographs.
    assert np.abs(dev.target_train[0].astype(np.int16) - demo.target_train[0]).mean() > 10
    paired, shifted = same_digits(dev.target_train[0], demo.target_train[0])
    assert paired > shifted + 0.15, (paired, shifted)
    # Its labelled test set: the held-out source-validation digits, four renderings each.
    validation_labels = demo.source_validation[1]
    np.testing.assert_array_equal(dev.target_test[1], np.tile(validation_labels, 4))
    n = len(validation_labels)
    first, second = dev.target_test[0][:n], dev.target_test[0][n : 2 * n]
    assert np.abs(first.astype(np.int16) - second).mean() > 10  # other patches each time
    # Its strokes are those digits: where a source-validation digit is ink, the rendering moves
    # away from the patch, so ink and background pixels differ strongly in the rendering too.
    grey = demo.source_validation[0][..., 0]
    ink = np.repeat(grey[None], 4, axis=0).reshape(-1, 28, 28) > 200
    rendered = dev.target_test[0].astype(np.float32).mean(-1)
    assert abs(rendered[ink].mean() - rendered[~ink].mean()) > 20


def test_renderings_shard_and_limit_through_the_input_pipeline():
    from jaxdann.data.pipeline import load_experiment_data

    config = config_lib.apply_overrides(config_lib.demo_config(), {"data.target_renderings": "2"})
    whole = load_experiment_data(config)
    assert len(whole.target) == 2 * 539 and len(whole.target_eval) == 540
    shards = [load_experiment_data(config, shard=(index, 3)) for index in range(3)]
    assert sum(len(shard.target) for shard in shards) == len(whole.target)
    np.testing.assert_array_equal(shards[2].target.images, whole.target.images[2::3])
    config.data.limit = 100  # counts rendered images: the target set is cut like any other
    limited = load_experiment_data(config)
    assert len(limited.target) == 100 and len(limited.target_eval) == 100


def test_a_demo_folder_from_before_the_rename_resumes_and_loads(tmp_path):
    import json

    from jaxdann import load_run, train
    from jaxdann.data.demo import current_dataset_name

    assert current_dataset_name("digits", "mnist") == "digits"  # the benchmark stays itself
    assert current_dataset_name("pacs", "photo") == "pacs"
    workdir = str(tmp_path / "old")
    quick = ["--workdir", workdir, "--config.data.limit=64", "--config.log_every_epoch=false"]
    assert train.main([*quick, "--config.epochs=1"]) == 0
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    saved["data"]["name"] = "digits"  # what a demo folder's config.json said before
    path.write_text(json.dumps(saved))
    (tmp_path / "old" / "model.json").unlink(missing_ok=True)  # nor was there a model record
    assert load_run(workdir).class_names == tuple(str(digit) for digit in range(10))
    assert train.main([*quick, "--config.epochs=2"]) == 0
    rows = (tmp_path / "old" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]


def test_the_data_command_counts_the_demo_splits(capsys):
    from jaxdann.data import explore

    assert explore.main(["--dataset", "demo", "--domains", "digits,digits_textured"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split() == ["class", "digits/train", "digits/validation"] + [
        "digits_textured/train",
        "digits_textured/test",
    ]
    splits = make_digits_splits(28, "digits_textured")
    parts = ("source_train", "source_validation", "target_train", "target_test")
    total = next(line for line in out if line.startswith("total")).split()[1:]
    assert [int(n) for n in total] == [len(getattr(splits, part)[1]) for part in parts]

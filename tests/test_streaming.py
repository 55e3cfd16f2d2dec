"""Streamed data (data.streaming): Grain pipelines, host transforms as torchvision defines them,
reduced-size JPEG decoding, resume from the pipeline's saved state, bad files."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

from jaxdann import config as config_lib
from jaxdann.data import decode, image_transforms, streaming
from jaxdann.data import pipeline as input_pipeline
from jaxdann.data.folder import preprocess_image
from jaxdann.errors import ConfigError, DataError
from jaxdann.training.trainer import train_and_evaluate


@pytest.fixture
def tree(tmp_path, write_pacs_tree):
    write_pacs_tree(tmp_path / "pacs")
    return tmp_path / "pacs"


def _config(root, cache_dir, tiny_pacs_overrides, **overrides):
    settings = {**tiny_pacs_overrides(root, cache_dir), "epochs": "2", **overrides}
    return config_lib.apply_overrides(config_lib.base_config(), settings)


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        rows = [json.loads(line) for line in handle]
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB picture (JPEG-friendly) with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------ transforms vs torchvision


def test_the_random_resized_crop_samples_boxes_as_torchvision_does():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (300, 200))
    for scale in ((0.08, 1.0), (0.7, 1.0)):
        ours = [image_transforms.random_resized_crop_box(300, 200, rng, scale) for _ in range(3000)]
        theirs = [T.RandomResizedCrop.get_params(image, scale, [3 / 4, 4 / 3]) for _ in range(3000)]
        for boxes in (ours, theirs):
            assert all(
                0 <= t and 0 <= lf and t + h <= 200 and lf + w <= 300 for t, lf, h, w in boxes
            )
        area = lambda boxes: np.mean([h * w / 60000 for _, _, h, w in boxes])  # noqa: E731
        ratio = lambda boxes: np.mean([math.log(w / h) for _, _, h, w in boxes])  # noqa: E731
        assert abs(area(ours) - area(theirs)) < 0.02
        assert abs(ratio(ours) - ratio(theirs)) < 0.02
    # No box of 90-100% of a 100 x 10 image has a ratio in [3/4, 4/3]: the centred fallback.
    thin = Image.new("RGB", (100, 10))
    expected = T.RandomResizedCrop.get_params(thin, [0.9, 1.0], [3 / 4, 4 / 3])
    assert image_transforms.random_resized_crop_box(100, 10, rng, (0.9, 1.0)) == tuple(expected)


def test_color_jitter_and_grayscale_equal_torchvisions_functions():
    image = _photo(48, 40)
    rng = np.random.default_rng(3)
    ours = image_transforms.color_jitter(image, rng, 0.5)
    rng = np.random.default_rng(3)  # the same draws, applied with torchvision's functions
    factors, shift, order = rng.uniform(0.5, 1.5, 3), rng.uniform(-0.5, 0.5), rng.permutation(4)
    functions = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    expected = image
    for which in order:
        value = float(factors[which]) if which < 3 else float(shift)
        expected = functions[which](expected, value)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))
    for shift in (-0.4, -0.05, 0.2, 0.5):
        np.testing.assert_array_equal(
            np.asarray(image_transforms.adjust_hue(image, shift)),
            np.asarray(F.adjust_hue(image, shift)),
        )
    np.testing.assert_array_equal(
        np.asarray(image_transforms.to_grayscale(image)),
        np.asarray(F.rgb_to_grayscale(image, num_output_channels=3)),
    )


def test_a_training_transform_is_torchvisions_resized_crop_of_the_resized_image(tmp_path):
    path = tmp_path / "a.png"
    _photo(64, 50).save(path)
    transform = image_transforms.ImageTransform(40, 32, resized_crop_scale=0.3)
    ours = transform(str(path), np.random.default_rng(7))
    resized = F.resize(Image.open(path).convert("RGB"), 40)
    box = image_transforms.random_resized_crop_box(
        *resized.size, np.random.default_rng(7), (0.3, 1)
    )
    expected = F.resized_crop(resized, *box, [32, 32], T.InterpolationMode.BILINEAR)
    np.testing.assert_array_equal(ours, np.asarray(expected))
    # Without a generator (evaluation) it is the pools' resize + centre crop.
    np.testing.assert_array_equal(transform(str(path)), preprocess_image(path, resize=40, crop=32))
    # TLlib's square resize first: ResizeImage(40), then the same crop sampling.
    square = image_transforms.ImageTransform(40, 32, resized_crop_scale=0.3, resize_mode="square")
    resized = Image.open(path).convert("RGB").resize((40, 40))
    box = image_transforms.random_resized_crop_box(40, 40, np.random.default_rng(7), (0.3, 1))
    expected = F.resized_crop(resized, *box, [32, 32], T.InterpolationMode.BILINEAR)
    np.testing.assert_array_equal(square(str(path), np.random.default_rng(7)), np.asarray(expected))
    np.testing.assert_array_equal(
        square(str(path)), preprocess_image(path, resize=40, crop=32, resize_mode="square")
    )


# ------------------------------------------------------------------------------- decoding


def test_reduced_decoding_decodes_large_jpegs_smaller_and_close_to_the_exact_pixels(tmp_path):
    path = tmp_path / "big.jpg"
    _photo(1000, 800).save(path, quality=92)
    reduced = decode.open_rgb(path, min_short=224)
    assert reduced.size == (375, 300)  # 3/8 scale: the smallest with a side >= 224
    exact = decode.center_crop(decode.resize_shorter(decode.open_rgb(path), 224), 224)
    fast = decode.center_crop(decode.resize_shorter(reduced, 224), 224)
    difference = np.abs(np.asarray(exact, np.int16) - np.asarray(fast, np.int16))
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 12
    # At full scale simplejpeg decodes as PIL does; other formats decode whole.
    small = tmp_path / "small.jpg"
    _photo(240, 230).save(small, quality=90)
    np.testing.assert_array_equal(
        np.asarray(decode.open_rgb(small, min_short=224)), np.asarray(decode.open_rgb(small))
    )
    png = tmp_path / "big.png"
    _photo(600, 500).save(png)
    assert decode.open_rgb(png, min_short=100).size == (600, 500)


# ---------------------------------------------------------------------- training, resuming


def test_a_streamed_run_trains_to_the_pools_numbers(tree, tmp_path, tiny_pacs_overrides):
    # 12 images in batches of 8: padding rows (pools repeat an image, streams hold zeros), which
    # the bottleneck's BatchNorm leaves out of its statistics.
    bottleneck = {"model.bottleneck": "8"}
    pools = _config(tree, tmp_path / "cache", tiny_pacs_overrides, **bottleneck)
    streamed = _config(
        tree,
        tmp_path / "cache",
        tiny_pacs_overrides,
        **{"data.streaming": "true", "data.workers": "0"},
        **bottleneck,
    )
    train_and_evaluate(pools, str(tmp_path / "pools"), progress=False)
    train_and_evaluate(streamed, str(tmp_path / "streamed"), progress=False)
    assert _rows(tmp_path / "pools") == _rows(tmp_path / "streamed")
    items = os.listdir(tmp_path / "streamed" / "checkpoints" / "2")
    assert {"default", "data_iterator"} <= set(items)


def test_an_augmented_streamed_run_resumes_as_an_unbroken_one(
    tree, tmp_path, tiny_pacs_overrides, train_whole_and_resumed
):
    settings = tiny_pacs_overrides(tree, tmp_path / "cache")
    settings |= {
        "data.name": "pacs",
        "data.streaming": "true",
        "data.workers": "2",
        "data.resized_crop_scale": "0.5",
        "data.color_jitter": "0.3",
        "data.grayscale": "0.2",
    }
    whole, parts = train_whole_and_resumed(
        tmp_path, [f"--config.{k}={v}" for k, v in settings.items()]
    )
    assert whole == parts
    assert len(whole) == 2 and all(math.isfinite(row["class_loss"]) for row in whole)


def test_a_steps_batch_does_not_depend_on_the_worker_count(tree, tmp_path, tiny_pacs_overrides):
    config = _config(
        tree,
        tmp_path / "c",
        tiny_pacs_overrides,
        **{"data.streaming": "true", "data.color_jitter": "0.4"},
    )
    data = input_pipeline.load_experiment_data(config)
    batches = streaming.TrainBatches(
        data.source, data.target, streaming.image_transform(config.data, train=True), 8, 1, 0, 2
    )
    seen = []
    for workers in (0, 2):
        iterator = streaming.train_iterator(batches, workers)
        seen.append([next(iterator) for _ in range(3)])
        iterator.close()
    for one, other in zip(*seen, strict=True):
        for key in ("source_images", "source_labels", "target_images", "source_mask"):
            np.testing.assert_array_equal(one[key], other[key])
    # Augmented: step 2 (epoch 1) sees the source images differently from step 0.
    centre = streaming.image_transform(config.data, train=False)
    plain = streaming.TrainBatches(data.source, None, centre, 8, 1, 0, 2)(0)
    assert not np.array_equal(seen[0][0]["source_images"], plain["source_images"])
    np.testing.assert_array_equal(seen[0][0]["source_labels"], plain["source_labels"])


def test_a_streamed_run_resumes_with_as_many_decoding_processes(
    tree, tmp_path, tiny_pacs_overrides
):
    settings = {"data.streaming": "true", "data.workers": "0", "epochs": "1"}
    config = _config(tree, tmp_path / "c", tiny_pacs_overrides, **settings)
    train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    settings |= {"epochs": "2", "data.workers": "2"}
    config = _config(tree, tmp_path / "c", tiny_pacs_overrides, **settings)
    with pytest.raises(ConfigError, match="saved with 0 decoding processes.*data.workers=0"):
        train_and_evaluate(config, str(tmp_path / "run"), progress=False)


# ----------------------------------------------------------------------------- bad input


def test_an_undecodable_file_is_named_or_left_out(tree, tmp_path, tiny_pacs_overrides):
    bad = tree / "sketch" / "dog" / "0.png"
    bad.write_bytes(b"not an image")
    settings = {"data.streaming": "true", "data.workers": "0", "epochs": "1"}
    config = _config(tree, tmp_path / "c", tiny_pacs_overrides, **settings)
    with pytest.raises(DataError, match=r"sketch/dog/0\.png.*data\.on_bad=skip"):
        train_and_evaluate(config, str(tmp_path / "error"), progress=False)
    config = _config(
        tree, tmp_path / "c", tiny_pacs_overrides, **settings, **{"data.on_bad": "skip"}
    )
    with pytest.warns(UserWarning, match=r"sketch/dog/0\.png"):
        summary = train_and_evaluate(config, str(tmp_path / "skip"), progress=False)
    assert 0 <= summary["final_target_accuracy"] <= 1
    with open(tmp_path / "skip" / "evaluation.json") as handle:
        evaluation = json.load(handle)
    assert np.sum(evaluation["confusion_matrix"]) == 11  # sketch's 12 images, one left out
    correct = evaluation["target_accuracy"] * 11
    assert abs(correct - round(correct)) < 1e-5  # accuracy over the 11 decoded images


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.resized_crop_scale": "0.08"}, "applies to streamed data only"),
        ({"data.color_jitter": "0.5"}, "applies to streamed data only"),
        (
            {"data.streaming": "true", "data.grayscale": "1.5"},
            r"data.grayscale=1.5 must be in \[0, 1\]",
        ),
        ({"data.streaming": "true", "data.workers": "-2"}, "data.workers=-2"),
        ({"data.streaming": "true", "data.decode": "fast"}, "data.decode='fast' is not one of"),
        ({"data.streaming": "true", "data.shard_per_host": "true"}, "exclude each other"),
        ({"data.streaming": "true", "data.format": "tfds"}, "data.format=folder"),
    ],
)
def test_streaming_settings_that_do_not_fit_are_config_errors(
    tree, tmp_path, tiny_pacs_overrides, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(_config(tree, tmp_path / "c", tiny_pacs_overrides, **overrides))


def test_a_dataset_without_image_files_cannot_stream():
    config = config_lib.apply_overrides(
        config_lib.demo_config(), {"data.streaming": "true", "data.limit": "64"}
    )
    with pytest.raises(ConfigError, match="keeps its images in memory.*data.streaming=false"):
        input_pipeline.load_experiment_data(config)

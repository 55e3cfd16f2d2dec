"""The embedded demo (``data.name=demo``): scikit-learn's handwritten digits -> the same digits on
textured photographs.

The target domain is made the way MNIST-M is made from MNIST (Ganin & Lempitsky 2015): each digit is
blended with a random patch of a colour photograph, ``|patch - digit|`` per channel. The photographs
are the two that scikit-learn ships, so nothing is downloaded.

Two more renderings are labelled *development* domains: recipes for the demo are chosen on them (as
the seed chooses hyper-parameters on held-out PACS domains), so the photo target's test labels are
never used to choose anything. ``digits_textured_dev`` (rounds 12-13 of
``benchmarks/demo_selection.py``, which chose the shipped recipe) uses the same blending on other
views of the photographs and is scored on held-out source-validation digits; ``digits_noise``
(rounds 6-11) blends the target digit instances with random colour fields (the photographs'
colours, not their structure), a much harder shift than the photo target.

The 1,797 digits are split once (with a fixed data seed, independent of the training seed) into
disjoint sets: source train / source validation (held out, for model selection), target train
(used *without* labels) and target test (never used in training; only for reporting).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxdann.data.dataset import Dataset, Domain, Plan, select_rows
from jaxdann.errors import ConfigError

__all__ = [
    "CLASS_NAMES",
    "DEMO_DOMAINS",
    "Demo",
    "current_dataset_name",
    "DigitsSplits",
    "TARGET_RENDERINGS",
    "make_digits_splits",
]

CLASS_NAMES = tuple(str(digit) for digit in range(10))
_DATA_SEED = 20150526  # fixed: the demo's data never changes with the training seed
_NOISE_SEED = 20160101  # digits_noise's own stream: the photo target stays as it was
_EXTRA_SEED = 20170101  # extra renderings of the unlabelled target-train digits, their own stream
_DEV_SEED = 20180101  # the photo-like development rendering's own stream
_DEV_TEST_RENDERINGS = 4  # each held-out source-validation digit, on this many patches
TARGET_RENDERINGS = ("digits_textured", "digits_noise", "digits_textured_dev")


@dataclasses.dataclass(frozen=True)
class DigitsSplits:
    """uint8 NHWC images and int32 labels for each split."""

    source_train: tuple[np.ndarray, np.ndarray]
    source_validation: tuple[np.ndarray, np.ndarray]
    target_train: tuple[np.ndarray, np.ndarray]
    target_test: tuple[np.ndarray, np.ndarray]


def _upscale(digits: np.ndarray, size: int) -> np.ndarray:
    """8x8 digits in 0..16 -> size x size uint8 in 0..255 (bilinear, so strokes stay smooth)."""
    out = np.empty((len(digits), size, size), np.uint8)
    for index, digit in enumerate(digits):
        image = Image.fromarray((digit * (255.0 / 16.0)).astype(np.uint8))
        out[index] = np.asarray(image.resize((size, size), Image.BILINEAR))
    return out


def _photos(development: bool = False) -> list[np.ndarray]:
    """scikit-learn's two sample photographs; for the development rendering, other views of them.

    The development views are turned a quarter, mirrored and have their colour channels reversed:
    the same kind of texture (real photographs) with other edges, orientations and colours.
    """
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    if development:
        photos = [np.ascontiguousarray(np.rot90(photo)[:, ::-1, ::-1]) for photo in photos]
    return photos


def _textured(
    digits: np.ndarray, rng: np.random.Generator, development: bool = False
) -> np.ndarray:
    """MNIST-M blending: ``|photo patch - digit|`` per channel, patches at random places."""
    photos = _photos(development)
    size = digits.shape[1]
    out = np.empty((*digits.shape, 3), np.uint8)
    for index, digit in enumerate(digits):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size)
        left = rng.integers(photo.shape[1] - size)
        patch = photo[top : top + size, left : left + size].astype(np.int16)
        out[index] = np.abs(patch - digit[..., None].astype(np.int16)).astype(np.uint8)
    return out


def _colour_fields(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Development rendering: ``|field - digit|`` with a random colour field per image.

    The field's colours are pixels drawn from the same photographs (so brightness and colour
    statistics match the photo target), laid on a coarse grid, upsampled smoothly and grained
    with noise: the photographs' palette without their structure.
    """
    from sklearn.datasets import load_sample_images

    pixels = np.concatenate([photo.reshape(-1, 3) for photo in load_sample_images().images])
    size = digits.shape[1]
    out = np.empty((*digits.shape, 3), np.uint8)
    for index, digit in enumerate(digits):
        cells = int(rng.integers(3, 8))
        grid = pixels[rng.integers(len(pixels), size=cells * cells)].reshape(cells, cells, 3)
        field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32)
        field = np.clip(field + rng.normal(0.0, 20.0, field.shape), 0, 255).astype(np.int16)
        out[index] = np.abs(field - digit[..., None].astype(np.int16)).astype(np.uint8)
    return out


def make_digits_splits(
    image_size: int = 28, target: str = "digits_textured", target_renderings: int = 1
) -> DigitsSplits:
    """Source: grey digits (as RGB). Target: the rendered digits. Disjoint digit instances.

    ``target`` is ``digits_textured`` (the demo's target: photographs), ``digits_noise`` (the first
    development domain: smooth colour fields, the same target digit instances) or
    ``digits_textured_dev`` (the photo-like development domain: the same blending on other views of
    the photographs; its unlabelled train set renders the target-train digits, its labelled test
    set renders the held-out *source-validation* digits four times, so no target-test digit and no
    target label is used to choose anything).
    ``target_renderings`` > 1 renders each target-*train* digit that many times, on other random
    patches (or fields): a larger unlabelled target set, as DANN assumes (the paper's MNIST-M has
    60k). The first rendering and the target test set are those of ``target_renderings=1``; test
    digits are never rendered again.
    """
    if target not in TARGET_RENDERINGS:
        raise ConfigError(
            f"config key data.target is {target!r}; the demo's targets are "
            f"{', '.join(TARGET_RENDERINGS)}."
        )
    if target_renderings < 1:
        raise ConfigError(
            f"config key data.target_renderings is {target_renderings}; it must be at least 1."
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(_DATA_SEED)
    order = rng.permutation(len(digits.target))
    images = _upscale(digits.images[order], image_size)
    labels = digits.target[order].astype(np.int32)

    n = len(labels)
    source_end, target_train_end = int(0.4 * n), int(0.7 * n)
    validation_start = int(0.8 * source_end)
    grey_rgb = np.repeat(images[..., None], 3, axis=-1)
    if target == "digits_noise":
        render, rng = _colour_fields, np.random.default_rng(_NOISE_SEED)
    elif target == "digits_textured_dev":
        render, rng = (
            functools.partial(_textured, development=True),
            np.random.default_rng(_DEV_SEED),
        )
    else:
        render = _textured
    textured = render(images[source_end:], rng)
    offset = source_end
    target_test = (textured[target_train_end - offset :], labels[target_train_end:])
    if target == "digits_textured_dev":
        # Its test set is replaced (the target-test digits' renderings above go unused, but they
        # keep the random stream that rounds 12-13 of benchmarks/demo_selection.py measured).
        held_out = np.tile(images[validation_start:source_end], (_DEV_TEST_RENDERINGS, 1, 1))
        target_test = (
            render(held_out, rng),
            np.tile(labels[validation_start:source_end], _DEV_TEST_RENDERINGS),
        )
    train_images = [textured[: target_train_end - offset]]
    extra_rng = np.random.default_rng(_EXTRA_SEED)
    for _ in range(target_renderings - 1):
        train_images.append(render(images[source_end:target_train_end], extra_rng))
    train_labels = np.tile(labels[source_end:target_train_end], target_renderings)
    return DigitsSplits(
        source_train=(grey_rgb[:validation_start], labels[:validation_start]),
        source_validation=(
            grey_rgb[validation_start:source_end],
            labels[validation_start:source_end],
        ),
        target_train=(np.concatenate(train_images), train_labels),
        target_test=target_test,
    )


SOURCE = "digits"  # the source domain: the grey digits
DEMO_DOMAINS = (SOURCE, *TARGET_RENDERINGS)
# (domain kind, split) -> the DigitsSplits field holding it; the kind is the source or a target.
_PARTS = {
    ("source", "train"): "source_train",
    ("source", "validation"): "source_validation",
    ("target", "train"): "target_train",
    ("target", "test"): "target_test",
}


def current_dataset_name(name: str, source: str) -> str:
    """The ``data.name`` a saved config means now: the demo was ``data.name=digits`` (source
    ``digits``) before that name went to the MNIST/USPS/SVHN/MNIST-M benchmark."""
    return Demo.name if name == "digits" and source == SOURCE else name


@functools.lru_cache(maxsize=1)
def _cached_splits(image_size: int, target: str, target_renderings: int) -> DigitsSplits:
    """One experiment's splits, made once for its several parts (``Demo.load`` copies rows)."""
    return make_digits_splits(image_size, target, target_renderings)


class Demo(Dataset):
    """The embedded demo (``data.name=demo``): grey digits (``digits``: splits ``train`` and
    ``validation``, a held-out part) -> a rendering of other digits (one of
    :data:`TARGET_RENDERINGS`: splits ``train``, unlabelled in training, and ``test``). Images
    are ``data.crop`` pixels square."""

    name = "demo"
    domains = DEMO_DOMAINS
    splits = ("train", "validation", "test")
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def class_names(self, data, domains: Sequence[str] | None = None) -> tuple[str, ...]:
        return CLASS_NAMES

    def check_settings(self, data) -> None:
        from jaxdann.config import DIGITS_VALIDATION, NO_VALIDATION

        if data.source != SOURCE:
            raise ConfigError(
                f"config key data.source={data.source!r}: the digits demo's source is always "
                f"{SOURCE!r} (data.name=pacs, digits, ... name the real data sets)."
            )
        if data.target not in TARGET_RENDERINGS:
            raise ConfigError(
                f"config key data.target={data.target!r} is not a target of the digits demo; "
                f"choose one of {', '.join(TARGET_RENDERINGS)}."
            )
        if data.validation not in (DIGITS_VALIDATION, *NO_VALIDATION):
            raise ConfigError(
                f"config key data.validation={data.validation!r}: the digits demo validates on "
                f"{DIGITS_VALIDATION!r} (a held-out part of the source) or on nothing ('none')."
            )

    def plan(self, data) -> Plan:
        from jaxdann.config import NO_VALIDATION

        validation = () if data.validation in NO_VALIDATION else ((SOURCE, "validation"),)
        return Plan(
            source=((SOURCE, "train"),),
            target=(data.target, "train"),
            target_eval=(data.target, "test"),
            validation=validation,
        )

    def listed_splits(self, data, domain: str) -> tuple[str, ...]:
        kind = "source" if domain == SOURCE else "target"
        return tuple(split for (k, split) in _PARTS if k == kind)

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
        images, labels = self._part(domain, split, data, data.crop)
        rows = select_rows(len(labels), shard, limit)
        return Domain(domain, images[rows], labels[rows], CLASS_NAMES)

    def listing(self, domain: str, split: str, data) -> tuple[str, tuple[str, ...], np.ndarray]:
        return "", (), self._part(domain, split, data, 28)[1]  # any size has these labels

    def _part(self, domain: str, split: str, data, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The images (``size`` px) and labels of one domain's split."""
        self.check_domain(domain)
        self.check_split(split)
        kind = "source" if domain == SOURCE else "target"
        field = _PARTS.get((kind, split))
        if field is None:
            have = ", ".join(part for (k, part) in _PARTS if k == kind)
            raise ConfigError(f"the digits demo's domain {domain!r} has the splits {have}.")
        # The source is the same whatever the target; rendering the configured one shares work.
        target = domain if kind == "target" else data.target
        if target not in TARGET_RENDERINGS:
            target = TARGET_RENDERINGS[0]
        return getattr(_cached_splits(size, target, data.target_renderings), field)

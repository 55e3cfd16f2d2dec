"""What a streamed image goes through on the host: decode, resize, crop, and the training
augmentations TLlib and DomainBed use, as torchvision defines them for PIL images.

:class:`ImageTransform` maps an image file to uint8 ``[crop, crop, 3]``. Evaluation, and
training without augmentation, is the seed's ``Resize(resize) + CenterCrop(crop)``, or with
``resize_mode="square"`` TLlib's ``ResizeImage(resize) + CenterCrop(crop)`` (the pools'
preprocessing, pixel for pixel with ``decode="exact"``). Training may add, each as torchvision's
transform of that name (the tests compare them with torchvision):

- ``resized_crop_scale=s > 0``: ``RandomResizedCrop(crop, scale=(s, 1), ratio=(3/4, 4/3))`` on
  the resized image instead of the centre crop (TLlib: 0.08 after its square resize to 256,
  ``resize_mode="square"``; DomainBed: 0.7 on the original image);
- ``color_jitter=j > 0``: ``ColorJitter(j, j, j, min(j, 0.5))``: brightness, contrast and
  saturation factors in ``[max(0, 1 - j), 1 + j]``, hue shift in ``[-j, j]`` (at most half a
  turn), applied in a random order (TLlib 0.5, DomainBed 0.3);
- ``grayscale=p > 0``: ``RandomGrayscale(p)``, grey in all three channels (DomainBed 0.1).

Random horizontal flips stay on the device (``data.random_flip``), as for the pools.

Randomness is a ``numpy.random.Generator`` the caller derives from (seed, step, row), so an
image's augmentation depends on where it is in the run, never on which worker decoded it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance

from jaxdann.data import decode

__all__ = [
    "ImageTransform",
    "adjust_hue",
    "color_jitter",
    "random_resized_crop_box",
    "to_grayscale",
]

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range (torchvision's default)
_ATTEMPTS = 10  # torchvision's tries at a box inside the image before its fallback


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a box covering a fraction in ``scale`` of the image, with
    an aspect ratio log-uniform in :data:`RATIO`: torchvision's ``RandomResizedCrop`` sampling.
    After ten boxes that do not fit, the largest centred box with a ratio in range."""
    area = width * height
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(_ATTEMPTS):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_low, log_high))
        box_width = int(round(math.sqrt(target * aspect)))
        box_height = int(round(math.sqrt(target / aspect)))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = int(rng.integers(0, height - box_height + 1))
            left = int(rng.integers(0, width - box_width + 1))
            return top, left, box_height, box_width
    ratio = width / height
    if ratio < RATIO[0]:
        box_width, box_height = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        box_width, box_height = int(round(height * RATIO[1])), height
    else:
        box_width, box_height = width, height
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


def adjust_hue(image: Image.Image, shift: float) -> Image.Image:
    """The hue turned by ``shift`` of a full turn (in [-0.5, 0.5]), in PIL's 8-bit HSV, where
    the hue channel wraps around: torchvision's ``adjust_hue`` for PIL images."""
    hue, saturation, value = image.convert("HSV").split()
    turned = np.asarray(hue, np.uint8) + np.uint8(int(shift * 255) % 256)  # wraps mod 256
    return Image.merge("HSV", (Image.fromarray(turned, "L"), saturation, value)).convert("RGB")


def color_jitter(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast, saturation and hue changed by random amounts, in random order."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    hue = min(strength, 0.5)
    factors = rng.uniform(low, high, 3)
    shift = rng.uniform(-hue, hue)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for which in rng.permutation(4):
        if which < 3:
            image = enhancers[which](image).enhance(float(factors[which]))
        else:
            image = adjust_hue(image, float(shift))
    return image


def to_grayscale(image: Image.Image) -> Image.Image:
    """PIL's luma (ITU-R 601-2) in all three channels: torchvision's ``Grayscale(3)``."""
    grey = image.convert("L")
    return Image.merge("RGB", (grey, grey, grey))


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """A file -> uint8 ``[crop, crop, 3]``; random parts on only where a ``rng`` is given."""

    resize: int
    crop: int
    resized_crop_scale: float = 0.0
    color_jitter: float = 0.0
    grayscale: float = 0.0
    decode: str = "exact"  # exact | reduced (see jaxdann.data.decode)
    resize_mode: str = "shorter"  # shorter | square (see jaxdann.data.decode.resize)

    @property
    def augments(self) -> bool:
        """Does training draw random numbers (an ``rng`` per image)?"""
        return self.resized_crop_scale > 0 or self.color_jitter > 0 or self.grayscale > 0

    def __call__(self, path: str, rng: np.random.Generator | None = None) -> np.ndarray:
        min_short = self.resize if self.decode == "reduced" else 0
        image = decode.open_rgb(path, min_short=min_short)
        image = decode.resize(image, self.resize, self.resize_mode)
        if rng is not None and self.resized_crop_scale > 0:
            top, left, height, width = random_resized_crop_box(
                *image.size, rng, (self.resized_crop_scale, 1.0)
            )
            image = image.crop((left, top, left + width, top + height))
            image = image.resize((self.crop, self.crop), Image.BILINEAR)
        else:
            image = decode.center_crop(image, self.crop)
        if rng is not None and self.color_jitter > 0:
            image = color_jitter(image, rng, self.color_jitter)
        if rng is not None and self.grayscale > 0 and rng.uniform() < self.grayscale:
            image = to_grayscale(image)
        return np.asarray(image, dtype=np.uint8)

"""Image files -> RGB PIL images, at full size or at the smallest JPEG scale a resize still needs.

:func:`open_rgb` with ``min_short=0`` decodes the whole image as PIL does (any mode becomes RGB):
what the cached pools and torchvision's PIL transforms start from. With ``min_short=S`` a JPEG is
decoded at the smallest DCT scale (1/8, 1/4, 3/8, ... 1: libjpeg-turbo's) whose shorter side is
still at least ``S``, with simplejpeg, or PIL's draft mode where simplejpeg cannot read the file
(CMYK JPEGs); other formats decode whole. Resizing the shorter side to ``S`` afterwards then
never upsamples, and a 1000-pixel photo resized to 256 decodes about 10x less. The pixels differ
slightly from a full decode followed by the same resize (the DCT scaling filters differently),
so this is an option (``data.decode=reduced``), not the default.

:func:`resize_shorter` and :func:`center_crop` are torchvision's ``Resize(size)`` (bilinear,
antialiased: PIL's filter) and ``CenterCrop(size)`` on PIL images, with its rounding;
:func:`resize_square` is TLlib's ``ResizeImage(size)`` (PIL's default filter, bicubic, to
``size`` x ``size``, the aspect ratio not kept). :func:`resize` picks one by ``data.resize_mode``.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = [
    "DECODE_MODES",
    "RESIZE_MODES",
    "center_crop",
    "open_rgb",
    "resize",
    "resize_shorter",
    "resize_square",
]

DECODE_MODES = ("exact", "reduced")
RESIZE_MODES = ("shorter", "square")
_JPEG_MAGIC = b"\xff\xd8"


def open_rgb(path: str | os.PathLike, *, min_short: int = 0) -> Image.Image:
    """The image at ``path`` as RGB, decoded now (a truncated file fails here, with PIL's or
    simplejpeg's error). ``min_short > 0``: a JPEG at the smallest scale whose shorter side is
    at least ``min_short`` (never below, never upsampled)."""
    if min_short > 0:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == _JPEG_MAGIC:
            reduced = _reduced_jpeg(data, min_short)
            if reduced is not None:
                return reduced
        return _pil_rgb(path, min_short)
    return _pil_rgb(path, 0)


def _reduced_jpeg(data: bytes, min_short: int) -> Image.Image | None:
    """simplejpeg's decode at the smallest scale covering ``min_short``; ``None`` where it
    cannot read the file or is not installed (PIL's draft mode then decodes it)."""
    try:
        import simplejpeg  # a declared dependency; the core runs without it
    except ImportError:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):
            return None  # CMYK / YCCK: PIL converts those
        short = min(height, width)
        # simplejpeg chooses the smallest scale with both sides at least these.
        needed = -(-min_short * height // short), -(-min_short * width // short)
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_height=min(needed[0], height),
            min_width=min(needed[1], width),
        )
    except ValueError:
        return None
    return Image.fromarray(pixels, "RGB")


def _pil_rgb(path, min_short: int) -> Image.Image:
    with Image.open(path) as image:
        if min_short > 0 and image.format == "JPEG":
            width, height = image.size
            scale = min_short / min(width, height)
            if scale < 1:
                # draft() keeps both sides at least the requested size.
                image.draft("RGB", (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
        image.load()
        return image.convert("RGB")


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """The shorter side to ``size``, the longer in proportion (``int`` of the exact length),
    PIL bilinear: torchvision's ``Resize(size)`` on a PIL image."""
    width, height = image.size
    if width <= height:
        new_size = size, int(size * height / width)
    else:
        new_size = int(size * width / height), size
    return image if new_size == (width, height) else image.resize(new_size, Image.BILINEAR)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Both sides to ``size``, PIL bicubic (``Image.resize``'s default filter for RGB): TLlib's
    ``ResizeImage(size)``, the first step of its training and evaluation transforms."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.BICUBIC)


def resize(image: Image.Image, size: int, mode: str = "shorter") -> Image.Image:
    """:func:`resize_shorter` (``mode="shorter"``) or :func:`resize_square` (``"square"``)."""
    if mode == "square":
        return resize_square(image, size)
    if mode != "shorter":
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    return resize_shorter(image, size)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The centre ``size`` x ``size`` square: torchvision's ``CenterCrop`` (its rounding)."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))

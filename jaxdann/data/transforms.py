"""What the train step does to uint8 images on the device: augmentation, then normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["augment", "normalize"]


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 NHWC -> float32 ``(x / 255 - mean) / std`` (on the device, inside the step)."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(images: jax.Array, rng: jax.Array, *, flip: bool, crop: bool) -> jax.Array:
    """Random horizontal flips and random crops (pad by 1/8 with reflection, crop back)."""
    flip_rng, crop_rng = jax.random.split(rng)
    if flip:
        flips = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0], 1, 1, 1))
        images = jnp.where(flips, images[:, :, ::-1], images)
    if crop:
        _, height, width, _ = images.shape
        pad = max(height // 8, 1)
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        offsets = jax.random.randint(crop_rng, (images.shape[0], 2), 0, 2 * pad + 1)

        def crop_one(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, 3))

        images = jax.vmap(crop_one)(padded, offsets)
    return images

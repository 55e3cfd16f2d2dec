"""Gradient reversal layer (Ganin & Lempitsky 2015).

Identity on the forward pass; on the backward pass the incoming gradient is multiplied by
``-coefficient``. Everything *before* the layer (the feature extractor) is therefore pushed to
*increase* the domain classifier's loss while the domain classifier itself, after the layer,
minimises it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["reverse_gradient", "dann_schedule", "grl_coefficient"]


@jax.custom_vjp
def _reverse(x: jax.Array, coefficient: jax.Array) -> jax.Array:
    return x


def _reverse_fwd(x, coefficient):
    return x, coefficient


def _reverse_bwd(coefficient, cotangent):
    reversed_cotangent = (-coefficient * cotangent).astype(cotangent.dtype)
    # The coefficient is a hyper-parameter (possibly a schedule computed from the step count):
    # it must never be trained, so it receives an exact zero.
    return reversed_cotangent, jnp.zeros_like(coefficient)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def reverse_gradient(x: jax.Array, coefficient: float | jax.Array) -> jax.Array:
    """Returns ``x``; gradients flowing back through it are multiplied by ``-coefficient``.

    ``coefficient`` may be a Python number or a traced scalar (e.g. a schedule evaluated inside a
    jitted step). It receives a zero gradient.
    """
    coefficient = jnp.asarray(coefficient, dtype=jnp.result_type(float))
    if coefficient.ndim != 0:
        raise ValueError(
            f"reverse_gradient: coefficient must be a scalar, got shape {coefficient.shape}"
        )
    return _reverse(x, coefficient)


def dann_schedule(progress: jax.Array | float, gamma: float = 10.0) -> jax.Array:
    """The DANN paper's ramp ``2 / (1 + exp(-gamma * p)) - 1`` for progress p in [0, 1]."""
    progress = jnp.clip(jnp.asarray(progress, dtype=jnp.float32), 0.0, 1.0)
    return 2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0


def grl_coefficient(
    step: jax.Array,
    *,
    schedule: str,
    maximum: float,
    gamma: float,
    total_steps: int | jax.Array,
    warmup_steps: int | jax.Array = 0,
) -> jax.Array:
    """The reversal coefficient at ``step``: a constant, or the DANN ramp times ``maximum``.

    For the first ``warmup_steps`` it is 0 (the domain classifier learns, the features do not
    hear from it); the ramp's progress then runs over the remaining steps. The step counts may
    be traced.
    """
    step = jnp.asarray(step)
    if schedule == "constant":
        value = jnp.asarray(maximum, jnp.float32)
    else:
        ramp_steps = jnp.maximum(jnp.asarray(total_steps) - warmup_steps, 1).astype(jnp.float32)
        # Times the reciprocal rather than a division: the value is then the same whether the
        # step counts are traced or constants.
        progress = (step - warmup_steps).astype(jnp.float32) * (1.0 / ramp_steps)
        value = maximum * dann_schedule(progress, gamma)
    return jnp.where(step < warmup_steps, 0.0, value).astype(jnp.float32)

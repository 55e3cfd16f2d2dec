"""The reversal layer: identity forward, exactly -coefficient * g backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann.models.grl import dann_schedule, reverse_gradient

X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
G = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3)), jnp.float32)


def _vjp(x, coefficient, cotangent):
    _, pullback = jax.vjp(reverse_gradient, x, coefficient)
    return pullback(cotangent)


@pytest.mark.parametrize("coefficient", [0.1, 1.0, 0.0, 2.5])
def test_forward_is_identity_and_backward_is_exact(coefficient):
    np.testing.assert_array_equal(reverse_gradient(X, coefficient), X)
    dx, dc = _vjp(X, jnp.float32(coefficient), G)
    np.testing.assert_array_equal(dx, -jnp.float32(coefficient) * G)
    assert dc == 0.0


def test_grad_under_jit_with_a_traced_coefficient():
    weights = jnp.arange(12, dtype=jnp.float32).reshape(4, 3)

    @jax.jit
    def grads(x, coefficient):
        return jax.grad(lambda x, c: jnp.sum(reverse_gradient(x, c) * weights), (0, 1))(
            x, coefficient
        )

    for coefficient in (0.1, 0.7):
        dx, dc = grads(X, jnp.float32(coefficient))
        np.testing.assert_array_equal(dx, -jnp.float32(coefficient) * weights)
        assert dc == 0.0


def test_vmap_over_coefficients_and_inputs():
    coefficients = jnp.asarray([0.0, 0.1, 1.0, 3.0], jnp.float32)
    dx, dc = jax.vmap(_vjp)(X, coefficients, G)
    np.testing.assert_array_equal(dx, -coefficients[:, None] * G)
    np.testing.assert_array_equal(dc, jnp.zeros(4))


def test_second_order_and_composition():
    # Reversal twice is a plain identity in both directions.
    f = lambda x: jnp.sum(jnp.sin(reverse_gradient(reverse_gradient(x, 0.5), 2.0)))  # noqa: E731
    np.testing.assert_allclose(jax.grad(f)(X), jnp.cos(X), rtol=1e-6)


def test_bfloat16_cotangent_keeps_its_dtype():
    dx, _ = _vjp(X.astype(jnp.bfloat16), jnp.float32(0.1), G.astype(jnp.bfloat16))
    assert dx.dtype == jnp.bfloat16


def test_coefficient_must_be_scalar():
    with pytest.raises(ValueError, match="scalar"):
        reverse_gradient(X, jnp.ones(2))


def test_dann_schedule_endpoints_and_shape():
    assert float(dann_schedule(0.0)) == 0.0
    np.testing.assert_allclose(dann_schedule(1.0), 2 / (1 + np.exp(-10)) - 1, rtol=1e-6)
    np.testing.assert_allclose(dann_schedule(0.25), 2 / (1 + np.exp(-2.5)) - 1, rtol=1e-6)
    p = jnp.linspace(0, 1, 11)
    assert np.all(np.diff(np.asarray(dann_schedule(p))) > 0)

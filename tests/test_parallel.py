"""The XLA options jaxdann compiles its steps with (jaxdann.parallel.compiler_options)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann import parallel


@pytest.fixture
def fresh_options(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    parallel.compiler_options.cache_clear()
    yield parallel.compiler_options
    parallel.compiler_options.cache_clear()


def test_steps_compiled_with_the_cpu_options_compute_what_eager_jax_computes(fresh_options):
    options = fresh_options("cpu")
    assert options in ({}, parallel._CPU_OPTIONS)  # {} only where this XLA lacks the option
    if not options:
        pytest.skip(f"jax {jax.__version__}'s XLA does not know {list(parallel._CPU_OPTIONS)}")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 27, 27, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 5, 64, 32)) * 0.05, jnp.float32)

    # A convolution, then a product with a constant matrix and a sum: with XLA:CPU's default
    # library fusions (jax 0.10.2) this very program compiles to a wrong value (-5e22 or NaN
    # instead of -929.48); with jaxdann's options it must agree with op-by-op execution.
    def conv_loss(x, w):
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), [(2, 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(jnp.tanh(y) @ jnp.ones((32, 8)))

    step = jax.value_and_grad(conv_loss, (0, 1))
    with jax.disable_jit():
        eager = step(x, w)
    compiled = jax.jit(step, compiler_options=options)(x, w)
    for got, want in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_options_only_on_cpu_and_never_over_the_users_flags(fresh_options, monkeypatch):
    assert fresh_options("gpu") == {}
    assert fresh_options("tpu") == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert fresh_options("cpu") == {}


def test_an_option_this_xla_rejects_is_dropped(fresh_options, monkeypatch):
    monkeypatch.setattr(parallel, "_CPU_OPTIONS", {"xla_cpu_no_such_option_in_any_xla": "1"})
    assert fresh_options("cpu") == {}

"""The XLA options jaxdann compiles its steps with (jaxdann.training.parallel.compiler_options)."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann.training import parallel


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


def _convolutions_in_ynn_fusions(hlo: str) -> int:
    """How many convolutions a compiled XLA:CPU program hands to YNNPACK (inside ynn fusions)."""
    called = set(re.findall(r"%ynn_fusion[\w.]* = .*?calls=(%[\w.-]+)", hlo))
    # A computation is printed as "%name (params) -> type {" ... "}".
    bodies = re.findall(r"^(%[\w.-]+) [^\n]*\{\n(.*?)^\}", hlo, flags=re.M | re.S)
    return sum(body.count(" convolution(") for name, body in bodies if name in called)


@pytest.mark.parametrize(
    ("shard_per_host", "evaluation"),
    [
        (False, "make_evaluator.<locals>.evaluate_batch"),
        (True, "_with_labels.<locals>.evaluate"),
    ],
)
def test_only_the_train_and_evaluation_steps_get_the_options(
    fresh_options, monkeypatch, tmp_path, shard_per_host, evaluation
):
    from jaxdann import config as config_lib
    from jaxdann.training.trainer import train_and_evaluate

    options = fresh_options()
    if not options:
        pytest.skip(f"jax {jax.__version__}'s XLA does not know {list(parallel._CPU_OPTIONS)}")
    real_jit, jits = jax.jit, []

    def recording_jit(fun, *args, **kwargs):
        jits.append((fun.__qualname__, kwargs.get("compiler_options")))
        return real_jit(fun, *args, **kwargs)

    config = config_lib.demo_config()
    config.update_from_flattened_dict(
        {"epochs": 1, "batch_size": 16, "data.limit": 40, "checkpoint_every_epochs": 0}
    )
    config.data.shard_per_host = shard_per_host
    flags = os.environ.get("XLA_FLAGS")
    with monkeypatch.context() as patch:
        patch.setattr(jax, "jit", recording_jit)
        train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert os.environ.get("XLA_FLAGS") == flags  # nothing set for the whole process
    given = sorted(name for name, chosen in jits if chosen)
    assert given == sorted([evaluation, "make_train_step.<locals>.train_step"]), jits
    assert all(chosen in (None, {}, options) for _, chosen in jits)


def test_the_options_take_convolutions_from_ynnpack(fresh_options):
    options = fresh_options()
    if not options:
        pytest.skip(f"jax {jax.__version__}'s XLA does not know {list(parallel._CPU_OPTIONS)}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 27, 27, 64)).astype(np.float32)  # AlexNet's conv2
    w = rng.standard_normal((5, 5, 64, 192)).astype(np.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), [(2, 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    plain = jax.jit(conv).lower(x, w).compile().as_text()
    if _convolutions_in_ynn_fusions(plain) == 0:
        pytest.skip(f"jax {jax.__version__}'s XLA:CPU keeps this convolution from YNNPACK anyway")
    ours = jax.jit(conv, compiler_options=options).lower(x, w).compile().as_text()
    assert " convolution(" in ours and _convolutions_in_ynn_fusions(ours) == 0

"""Every method trains in bfloat16: one jitted step computes in bfloat16, keeps float32
parameters and optimizer state, and lands near the float32 step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.methods import METHODS
from jaxdann.training.model_setup import build_from_config, initial_variables
from jaxdann.training.optim import optimizer_factories
from jaxdann.training.step import TrainState, make_course, make_train_step

ROWS, SIZE, CLASSES = 8, 28, 10


def _config(adaptation: str, dtype: str):
    config = config_lib.demo_config()
    config.adaptation, config.model.dtype = adaptation, dtype
    config.method.discriminator_hidden, config.method.randomized_dim = 16, 64
    config.method.adversarial_hidden, config.method.afn_bottleneck, config.method.num_k = 16, 16, 1
    return config


def _one_step(adaptation: str, dtype: str):
    """The demo network (small heads) before and after one step on a fixed batch:
    ``(initial params, state, metrics)``."""
    config = _config(adaptation, dtype)
    network, method = build_from_config(config, CLASSES, mean=0.5, std=0.25)
    params, model_state = initial_variables(network, method, (SIZE, SIZE, 3), jax.random.PRNGKey(0))
    optimizer_for, schedule_for = optimizer_factories(config.optimizer)
    course = make_course(10, 20)
    learning_rate = jnp.float32(config.optimizer.learning_rate)
    state = TrainState(
        jnp.zeros((), jnp.int32),
        params,
        method.init_optimizer(optimizer_for(learning_rate, course), params),
        learning_rate,
        model_state,
    )
    rng = np.random.default_rng(0)
    batch = {
        "source_images": rng.integers(0, 256, (ROWS, SIZE, SIZE, 3), dtype=np.uint8),
        "source_labels": rng.integers(0, CLASSES, ROWS).astype(np.int32),
        "source_mask": np.ones(ROWS, np.float32),
        "target_images": rng.integers(0, 256, (ROWS, SIZE, SIZE, 3), dtype=np.uint8),
        "target_mask": np.ones(ROWS, np.float32),
    }
    step = jax.jit(make_train_step(method, optimizer_for, schedule_for))
    return (params, *step(state, batch, jax.random.PRNGKey(1), course))


# The default run checks DANN and MCD (the most stages); the others run with -m slow.
DEFAULT = ("dann", "mcd")


@pytest.mark.parametrize(
    "adaptation",
    [name if name in DEFAULT else pytest.param(name, marks=pytest.mark.slow) for name in METHODS],
)
def test_each_method_takes_a_bfloat16_step_near_the_float32_one(adaptation):
    initial, full, full_metrics = _one_step(adaptation, "float32")
    _, half, half_metrics = _one_step(adaptation, "bfloat16")
    for tree in (half.params, half.opt_state, half.model_state):
        for leaf in jax.tree.leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
                assert bool(jnp.all(jnp.isfinite(leaf)))
    # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 1e-2 of its value.
    np.testing.assert_allclose(half_metrics["loss"], full_metrics["loss"], rtol=3e-2, atol=1e-3)
    # Every part moved, and by the float32 update to within 0.3 of that update's norm
    # (0.04-0.21 seen).
    for part in full.params:
        update = _norm(full.params[part], initial[part])
        error = _norm(half.params[part], full.params[part])
        assert update > 0, part
        assert error <= 0.3 * update, (part, error / update)


def _norm(a, b) -> float:
    """The L2 norm of the difference of two parameter trees."""
    squares = jax.tree.map(lambda x, y: jnp.sum(jnp.square(x - y)), a, b)
    return float(jnp.sqrt(sum(jax.tree.leaves(squares))))

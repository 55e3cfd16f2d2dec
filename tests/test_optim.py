"""jaxdann.training.optim updates parameters exactly as torch.optim + StepLR does for the same
gradients."""

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxdann.training.optim import OPTIMIZERS, learning_rate_schedule, make_optimizer  # noqa: E402

# 5 epochs of 3 steps with a decay every 2 epochs: the learning rate drops twice.
STEPS_PER_EPOCH, STEP_SIZE, GAMMA, EPOCHS = 3, 2, 0.1, 5
LEARNING_RATE = 0.01
# Gradient scale per parameter: tiny (where eps and weight decay dominate), unit, and huge.
GRADIENT_SCALES = {"tiny": 1e-6, "unit": 1.0, "huge": 1e3}
SHAPES = {"tiny": (3, 4), "unit": (5,), "huge": (2, 3)}


def _initial_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def _torch_optimizer(name: str, params: list, momentum: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(params, LEARNING_RATE, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, LEARNING_RATE, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, LEARNING_RATE, weight_decay=weight_decay)
    return torch.optim.RMSprop(params, LEARNING_RATE, weight_decay=weight_decay)


def _run_both(torch_name: str, jax_name: str, momentum: float, weight_decay: float, seed: int = 1):
    """Feeds identical random gradients to torch and jaxdann; yields both param sets per step."""
    initial = _initial_params()
    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in initial.items()}
    torch_optimizer = _torch_optimizer(
        torch_name, list(torch_params.values()), momentum, weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size=STEP_SIZE, gamma=GAMMA)

    optimizer = make_optimizer(
        jax_name,
        LEARNING_RATE,
        momentum=momentum,
        weight_decay=weight_decay,
        step_size=STEP_SIZE,
        gamma=GAMMA,
        steps_per_epoch=STEPS_PER_EPOCH,
    )
    jax_params = {k: jnp.asarray(v) for k, v in initial.items()}
    opt_state = optimizer.init(jax_params)

    @jax.jit
    def jax_step(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        for _ in range(STEPS_PER_EPOCH):
            grads = {
                k: (GRADIENT_SCALES[k] * rng.normal(size=SHAPES[k])).astype(np.float32)
                for k in SHAPES
            }
            for k, p in torch_params.items():
                p.grad = torch.from_numpy(grads[k].copy())
            torch_optimizer.step()
            jax_params, opt_state = jax_step(jax_params, opt_state, grads)
            yield (
                {k: p.detach().numpy().copy() for k, p in torch_params.items()},
                {k: np.asarray(v) for k, v in jax_params.items()},
            )
        scheduler.step()


def _max_abs_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize(
    "name, momentum",
    [("sgd", 0.9), ("sgd", 0.0), ("adam", 0.9), ("rmsprop", 0.9)],
)
def test_matches_torch_every_step(name, momentum):
    steps = 0
    for torch_params, jax_params in _run_both(name, name, momentum, weight_decay=5e-5):
        for k in SHAPES:
            # Tolerance scaled to each leaf's magnitude: float32 rounding, nothing more.
            scale = float(np.max(np.abs(torch_params[k])))
            np.testing.assert_allclose(
                jax_params[k], torch_params[k], rtol=1e-5, atol=2e-6 * scale, err_msg=k
            )
        steps += 1
    assert steps == EPOCHS * STEPS_PER_EPOCH


def test_weight_decay_is_coupled_l2_not_decoupled():
    # Large decay so that coupled (Adam) and decoupled (AdamW) clearly part ways.
    weight_decay = 0.5
    adam_diffs, adamw_diffs = [], []
    runs = zip(
        _run_both("adam", "adam", 0.9, weight_decay),
        _run_both("adamw", "adam", 0.9, weight_decay),
        strict=True,
    )
    for (torch_adam, jax_params), (torch_adamw, _) in runs:
        adam_diffs.append(_max_abs_diff(torch_adam, jax_params))
        adamw_diffs.append(_max_abs_diff(torch_adamw, jax_params))
    assert max(adam_diffs) < 1e-4
    assert max(adamw_diffs) > 1e-3


def test_weight_decay_changes_the_update():
    with_decay = list(_run_both("sgd", "sgd", 0.9, weight_decay=0.1))
    without_decay = list(_run_both("sgd", "sgd", 0.9, weight_decay=0.0))
    assert _max_abs_diff(with_decay[-1][1], without_decay[-1][1]) > 1e-3


def test_schedule_matches_step_lr_per_epoch():
    schedule = learning_rate_schedule(
        LEARNING_RATE, step_size=STEP_SIZE, gamma=GAMMA, steps_per_epoch=STEPS_PER_EPOCH
    )
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size=STEP_SIZE, gamma=GAMMA)
    seen = set()
    for epoch in range(3 * STEP_SIZE + 1):
        expected = scheduler.get_last_lr()[0]
        for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH):
            np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6)
        seen.add(round(expected, 12))
        torch_optimizer.step()
        scheduler.step()
    assert len(seen) == 4  # the rate really decayed three times


def test_schedule_under_jit():
    schedule = learning_rate_schedule(0.5, step_size=2, gamma=0.5, steps_per_epoch=10)
    steps = jnp.arange(0, 100, dtype=jnp.int32)
    jitted = jax.jit(jax.vmap(schedule))(steps)
    expected = [0.5 * 0.5 ** ((s // 10) // 2) for s in range(100)]
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-6)
    assert float(jax.jit(schedule)(jnp.int32(20))) == pytest.approx(0.25)


def test_name_is_case_insensitive():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 0.5)}
    for name in OPTIMIZERS:
        reference = make_optimizer(name, 0.1, steps_per_epoch=2)
        shouting = make_optimizer(name.upper(), 0.1, steps_per_epoch=2)
        expected, _ = reference.update(grads, reference.init(params), params)
        actual, _ = shouting.update(grads, shouting.init(params), params)
        np.testing.assert_array_equal(actual["w"], expected["w"])


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="choose one of sgd, adam, rmsprop"):
        make_optimizer("adagrad", 0.1, steps_per_epoch=2)


@pytest.mark.parametrize("learning_rate", [0.0, -0.1])
def test_non_positive_learning_rate(learning_rate):
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer("sgd", learning_rate, steps_per_epoch=2)
    with pytest.raises(ValueError, match="learning_rate"):
        learning_rate_schedule(learning_rate, steps_per_epoch=2)


@pytest.mark.parametrize("steps_per_epoch", [0, -3])
def test_non_positive_steps_per_epoch(steps_per_epoch):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_optimizer("adam", 0.1, steps_per_epoch=steps_per_epoch)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        learning_rate_schedule(0.1, steps_per_epoch=steps_per_epoch)


def test_annealed_schedule_matches_torch_lambda_lr():
    from jaxdann.training.optim import annealed_learning_rate_schedule

    total = 20
    schedule = annealed_learning_rate_schedule(0.01, total_steps=total)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 / (1.0 + 10.0 * step / total) ** 0.75
    )
    for step in range(total + 1):
        np.testing.assert_allclose(float(schedule(step)), scheduler.get_last_lr()[0], rtol=1e-6)
        optimizer.step()
        scheduler.step()
    assert float(jax.jit(schedule)(total)) == pytest.approx(0.01 / 11**0.75, rel=1e-6)


def test_clip_norm_matches_torch_clip_grad_norm_then_sgd():
    rng = np.random.default_rng(3)
    params = _initial_params()
    torch_params = [torch.nn.Parameter(torch.tensor(v)) for v in params.values()]
    optimizer = torch.optim.SGD(torch_params, 0.1, momentum=0.9, weight_decay=5e-5)
    transform = make_optimizer(
        "sgd", 0.1, momentum=0.9, weight_decay=5e-5, steps_per_epoch=100, clip_norm=1.0
    )
    jax_params = {k: jnp.asarray(v) for k, v in params.items()}
    state = transform.init(jax_params)
    for scale in (10.0, 0.01, 50.0):  # clipped, untouched (norm < 1), clipped
        grads = {
            k: (scale * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()
        }
        for p, g in zip(torch_params, grads.values(), strict=True):
            p.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(torch_params, 1.0)
        optimizer.step()
        updates, state = transform.update(
            {k: jnp.asarray(g) for k, g in grads.items()}, state, jax_params
        )
        jax_params = optax.apply_updates(jax_params, updates)
    torch_result = {k: p.detach().numpy() for k, p in zip(params, torch_params, strict=True)}
    assert _max_abs_diff(jax_params, torch_result) < 1e-5
    unclipped = make_optimizer("sgd", 0.1, steps_per_epoch=100)
    assert len(unclipped.init(jax_params)) == 3  # clip_norm=0: no clipping stage at all

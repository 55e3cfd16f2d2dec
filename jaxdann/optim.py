"""Optimizers that update parameters exactly as the reference torch.optim setup does.

The PyTorch DANN reference trains with `torch.optim.{SGD, Adam, RMSprop}` (coupled L2 weight
decay) and a `StepLR` scheduler stepped once per epoch. Each optimizer here is an optax chain
that reproduces that update step for step, so JAX and torch runs can be compared number for
number (`tests/test_optim.py` checks this against torch itself).
"""

import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "rmsprop")

# torch defaults for the optimizers we mirror.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
_RMSPROP_ALPHA, _RMSPROP_EPS = 0.99, 1e-8


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, int | float) and not value > 0:  # a traced value is checked by its caller
        raise ValueError(f"{name} must be positive, got {value!r}.")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be zero or positive, got {value!r}.")


def learning_rate_schedule(
    learning_rate: float,
    *,
    step_size: int = 20,
    gamma: float = 0.1,
    steps_per_epoch: int,
) -> optax.Schedule:
    """Torch `StepLR(step_size, gamma)`, stepped once per epoch, as a per-optimizer-step schedule.

    `lr(step) = learning_rate * gamma ** ((step // steps_per_epoch) // step_size)`. Works with a
    traced step count and a traced `learning_rate`, so it can live inside a jitted training step
    whose compiled form is then shared by every learning rate (the sweep relies on this);
    `steps_per_epoch` may be traced too (`jaxdann.pairs` shares one step across source domains).
    """
    _check_positive("learning_rate", learning_rate)
    _check_positive("steps_per_epoch", steps_per_epoch)
    _check_positive("step_size", step_size)
    steps_per_decay = jnp.asarray(steps_per_epoch, jnp.int32) * int(step_size)

    def schedule(step: jnp.ndarray | int) -> jnp.ndarray:
        decays = jnp.asarray(step) // steps_per_decay
        return learning_rate * jnp.power(gamma, decays)

    return schedule


def annealed_learning_rate_schedule(
    learning_rate: float, *, total_steps: int, alpha: float = 10.0, beta: float = 0.75
) -> optax.Schedule:
    """The DANN paper's annealing, ``lr / (1 + alpha * p) ** beta`` with p = step / total_steps.

    Ganin et al. (2016) train their digits experiments with it (mu0 = 0.01, alpha 10, beta 0.75);
    in torch it is ``LambdaLR`` stepped every iteration.
    """
    _check_positive("learning_rate", learning_rate)
    _check_positive("total_steps", total_steps)

    # total_steps may be traced. Multiplying by its reciprocal is what XLA made of the division
    # by a constant this once was, so runs measured before it became traced repeat bit for bit.
    inverse_total = 1.0 / jnp.asarray(total_steps, jnp.float32)

    def schedule(step: jnp.ndarray | int) -> jnp.ndarray:
        progress = jnp.minimum(jnp.asarray(step, jnp.float32) * inverse_total, 1.0)
        return learning_rate / (1.0 + alpha * progress) ** beta

    return schedule


def _direction(name: str, momentum: float) -> optax.GradientTransformation:
    """The part of each optimizer between the L2-decayed gradient and the learning rate."""
    if name == "sgd":
        # torch SGD (dampening 0): buf = momentum * buf + grad, first buf = grad.
        return optax.trace(decay=momentum) if momentum else optax.identity()
    if name == "adam":
        return optax.scale_by_adam(b1=_ADAM_B1, b2=_ADAM_B2, eps=_ADAM_EPS)
    # torch RMSprop: square_avg starts at 0, no bias correction, eps outside the sqrt.
    return optax.scale_by_rms(
        decay=_RMSPROP_ALPHA,
        eps=_RMSPROP_EPS,
        initial_scale=0.0,
        eps_in_sqrt=False,
        bias_correction=False,
    )


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-5,
    step_size: int = 20,
    gamma: float = 0.1,
    steps_per_epoch: int,
    schedule: optax.Schedule | None = None,
    clip_norm: float = 0.0,
) -> optax.GradientTransformation:
    """The torch.optim optimizer `name` with coupled L2 weight decay and a per-epoch StepLR.

    `schedule`, if given, replaces the StepLR schedule (e.g. `annealed_learning_rate_schedule`).
    `clip_norm` > 0 first rescales the gradients to at most that global norm (what
    `torch.nn.utils.clip_grad_norm_` before `optimizer.step()` does, without its 1e-6 epsilon).

    Matches `torch.optim.SGD(lr, momentum, weight_decay)`, `Adam(lr, weight_decay)` or
    `RMSprop(lr, weight_decay)` (torch defaults otherwise) with
    `StepLR(step_size, gamma)` stepped after every `steps_per_epoch` updates. Momentum applies
    to SGD only. `update` needs `params`, for the weight decay.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid names are {', '.join(OPTIMIZERS)}.")
    _check_non_negative("momentum", momentum)
    _check_non_negative("weight_decay", weight_decay)
    if schedule is None:
        schedule = learning_rate_schedule(
            learning_rate, step_size=step_size, gamma=gamma, steps_per_epoch=steps_per_epoch
        )
    _check_non_negative("clip_norm", clip_norm)
    clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    return optax.chain(
        *clip,
        # torch adds weight_decay * param to the gradient before momentum / moments.
        optax.add_decayed_weights(weight_decay),
        _direction(key, momentum),
        optax.scale_by_learning_rate(schedule),
    )

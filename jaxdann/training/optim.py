"""Optimizers that update parameters exactly as the reference torch.optim setup does.

The PyTorch DANN reference trains with `torch.optim.{SGD, Adam, RMSprop}` (coupled L2 weight
decay) and a `StepLR` scheduler stepped once per epoch. Each optimizer here is an optax chain
that reproduces that update step for step, so JAX and torch runs can be compared number for
number (`tests/test_optim.py` checks this against torch itself).
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxdann.registry import Registry

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

    # total_steps may be traced; times its reciprocal, the value is the same whether it is
    # traced or a constant (XLA turns a division by a constant into that product).
    inverse_total = 1.0 / jnp.asarray(total_steps, jnp.float32)

    def schedule(step: jnp.ndarray | int) -> jnp.ndarray:
        progress = jnp.minimum(jnp.asarray(step, jnp.float32) * inverse_total, 1.0)
        return learning_rate / (1.0 + alpha * progress) ** beta

    return schedule


def _sgd(momentum: float) -> optax.GradientTransformation:
    # torch SGD (dampening 0): buf = momentum * buf + grad, first buf = grad.
    return optax.trace(decay=momentum) if momentum else optax.identity()


def _adam(momentum: float) -> optax.GradientTransformation:
    del momentum  # Adam's moments have their own decay rates (torch's defaults)
    return optax.scale_by_adam(b1=_ADAM_B1, b2=_ADAM_B2, eps=_ADAM_EPS)


def _rmsprop(momentum: float) -> optax.GradientTransformation:
    del momentum  # torch RMSprop's momentum defaults to 0; jaxdann mirrors that default
    # torch RMSprop: square_avg starts at 0, no bias correction, eps outside the sqrt.
    return optax.scale_by_rms(
        decay=_RMSPROP_ALPHA,
        eps=_RMSPROP_EPS,
        initial_scale=0.0,
        eps_in_sqrt=False,
        bias_correction=False,
    )


# name -> the part of the optimizer between the L2-decayed gradient and the learning rate,
# given optimizer.momentum. Adding an optimizer is one line here.
OPTIMIZERS: Registry[Callable[[float], optax.GradientTransformation]] = Registry(
    "optimizer.name", "optimizer"
)
OPTIMIZERS.register("sgd", _sgd)
OPTIMIZERS.register("adam", _adam)
OPTIMIZERS.register("rmsprop", _rmsprop)


def scale_parts(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiplies the updates of the top-level parameter parts named in ``multipliers``.

    Last in a chain it is a per-part learning rate (torch's parameter groups with ``lr * m``;
    the weight decay, momentum and moments do not depend on the learning rate, so this is exact).
    """

    def scale(updates, params=None):
        del params
        return {
            part: jax.tree.map(lambda u, m=multipliers[part]: u * m, value)
            if part in multipliers
            else value
            for part, value in updates.items()
        }

    return optax.stateless(scale)


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
    # Any case ("SGD"); an unknown name is a ConfigError listing the registered ones.
    direction = OPTIMIZERS.get(name.lower() if isinstance(name, str) else name)
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
        direction(momentum),
        optax.scale_by_learning_rate(schedule),
    )


def optimizer_factories(opt) -> tuple[Callable, Callable]:
    """``optimizer_for(learning_rate, course)`` and ``schedule_for(learning_rate, course)`` for
    the ``optimizer`` config section ``opt``.

    Factories, not an optimizer: the train step builds its optimizer from the traced learning
    rate and course, so runs that differ only in those share one compiled step.
    """

    def schedule_for(learning_rate, course):
        if opt.schedule == "annealed":
            return annealed_learning_rate_schedule(learning_rate, total_steps=course["total_steps"])
        return learning_rate_schedule(
            learning_rate,
            step_size=opt.step_size,
            gamma=opt.gamma,
            steps_per_epoch=course["steps_per_epoch"],
        )

    def optimizer_for(learning_rate, course):
        optimizer = make_optimizer(
            opt.name,
            learning_rate,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            schedule=schedule_for(learning_rate, course),
            clip_norm=float(opt.clip_norm),
            steps_per_epoch=course["steps_per_epoch"],
        )
        multiplier = float(opt.backbone_lr_multiplier)
        if multiplier == 1.0:
            return optimizer
        return optax.chain(optimizer, scale_parts({"features": multiplier}))

    return optimizer_for, schedule_for

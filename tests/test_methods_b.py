"""MDD, MCD and AFN: trained through the command line; MCD's one jitted step against its three
stages written out by hand; MCD resumed bit for bit; MDD's gradient against a hand-written one."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann import losses, train
from jaxdann.data.transforms import normalize
from jaxdann.errors import ConfigError
from jaxdann.methods import METHODS
from jaxdann.methods.afn import AFN
from jaxdann.methods.mcd import MCD
from jaxdann.methods.mdd import MDD
from jaxdann.training.model_setup import build_from_config, initial_variables
from jaxdann.training.optim import optimizer_factories
from jaxdann.training.step import TrainState, make_course, make_train_step

QUICK = ["--config.epochs=2", "--config.data.limit=96", "--config.log_every_epoch=false"]
CLASSES, ROWS, SIZE = 10, 6, 28


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize(
    "name,method,extra",
    [
        pytest.param("mdd", MDD, [], marks=pytest.mark.slow),
        ("mcd", MCD, []),
        # Dropout and a bottleneck: the L2-preserved dropout and two BatchNorm passes run.
        pytest.param(
            "afn",
            AFN,
            ["--config.model.dropout_rate=0.3", "--config.model.bottleneck=16"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_the_method_trains_through_the_command_line(tmp_path, name, method, extra):
    assert METHODS.get(name) is method
    workdir = str(tmp_path / name)
    assert train.main(["--workdir", workdir, f"--config.adaptation={name}", *QUICK, *extra]) == 0
    rows = _rows(workdir)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert set(method.epoch_metrics) <= set(row)
        assert all(np.isfinite(row[key]) for key in method.epoch_metrics)
    with open(os.path.join(workdir, "summary.json")) as handle:
        assert json.load(handle)["adaptation"] == name
    if name == "afn":  # the stepwise norm loss enlarges the features' norms
        assert rows[1]["feature_norm_target"] > rows[0]["feature_norm_target"]
        assert rows[0]["norm_loss"] == pytest.approx(2.0)  # delta^2 per domain, delta 1


# -- a small method on one batch, in plain JAX --------------------------------------------------


def _setup(adaptation, **overrides):
    """The demo config's network and method for ``adaptation`` (10 classes, 28 px), its first
    variables, and one batch of ``ROWS`` rows per domain with padding rows."""
    config = config_lib.demo_config()
    config.adaptation = adaptation
    config_lib.apply_overrides(config, {key: str(value) for key, value in overrides.items()})
    network, method = build_from_config(config, CLASSES, mean=0.5, std=0.25)
    params, model_state = initial_variables(network, method, (SIZE, SIZE, 3), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {
        "source_images": rng.integers(0, 256, (ROWS, SIZE, SIZE, 3)).astype(np.uint8),
        "source_labels": rng.integers(0, CLASSES, ROWS).astype(np.int32),
        "source_mask": np.array([1, 1, 1, 1, 1, 0], np.float32),
        "target_images": rng.integers(0, 256, (ROWS, SIZE, SIZE, 3)).astype(np.uint8),
        "target_mask": np.array([1, 1, 1, 1, 0, 0], np.float32),
    }
    return config, method, params, model_state, jax.tree.map(jnp.asarray, batch)


def _images(method, batch):
    source = normalize(batch["source_images"], method.mean, method.std)
    return jnp.concatenate([source, normalize(batch["target_images"], method.mean, method.std)])


def _masked_mean(values, mask):
    return jnp.sum(values * mask) / jnp.sum(mask)


def _cross_entropy(logits, labels, mask):
    log_probs = jax.nn.log_softmax(logits)
    return _masked_mean(-log_probs[jnp.arange(labels.shape[0]), labels], mask)


# -- MCD --------------------------------------------------------------------------------------


def _mcd_by_hand(config, method, params, model_state, batch):
    """MCD's stages A, B and C (``num_k`` times), each its own gradient and a torch-style SGD
    update (momentum, L2 decay, one momentum buffer per parameter, one learning rate for the
    whole step): ``(params, model_state, discrepancy of the last stage C)``."""
    net, images = method.network, _images(method, batch)
    rows, labels = ROWS, batch["source_labels"]
    opt = config.optimizer
    trade_off, lr = config.method.trade_off, opt.learning_rate
    features = ("features", "bottleneck")
    classifiers = ("classifier", "classifier_2")

    # The padding rows stay out of the bottleneck's batch statistics (as absent rows would).
    mask = jnp.concatenate([batch["source_mask"], batch["target_mask"]])

    def forward(p, state):
        h, state = net.embed(p, state, images, train=True, mask=mask)
        y1, state = net.run(p, state, "classifier", h, train=True, mask=mask)
        y2, state = net.run(p, state, "classifier_2", h, train=True, mask=mask)
        return y1, y2, state

    def source_loss(y1, y2):
        mask = batch["source_mask"]
        return _cross_entropy(y1[:rows], labels, mask) + _cross_entropy(y2[:rows], labels, mask)

    def discrepancy(y1, y2):
        gap = jnp.abs(jax.nn.softmax(y1[rows:]) - jax.nn.softmax(y2[rows:])).mean(-1)
        return _masked_mean(gap, batch["target_mask"])

    buffers = {}

    def sgd(p, grads, parts):
        p = dict(p)
        for part in parts:
            decayed = jax.tree.map(lambda g, w: g + opt.weight_decay * w, grads[part], p[part])
            if part in buffers:
                decayed = jax.tree.map(lambda b, d: opt.momentum * b + d, buffers[part], decayed)
            buffers[part] = decayed
            p[part] = jax.tree.map(lambda w, b: w - lr * b, p[part], decayed)
        return p

    def stage_a(p):  # with the MCC regulariser of both classifiers' target logits
        y1, y2, state = forward(p, model_state)
        mask, weight = batch["target_mask"], config.method.mcc_weight
        regularizer = losses.mcc(y1[rows:], mask=mask) + losses.mcc(y2[rows:], mask=mask)
        return source_loss(y1, y2) + weight * regularizer / 2, state

    grads, model_state = jax.grad(stage_a, has_aux=True)(params)
    params = sgd(params, grads, features + classifiers)

    def stage_b(p):
        y1, y2, state = forward(p, model_state)
        return source_loss(y1, y2) - trade_off * discrepancy(y1, y2), state

    grads, model_state = jax.grad(stage_b, has_aux=True)(params)
    params = sgd(params, grads, classifiers)

    def stage_c(p, state):
        y1, y2, state = forward(p, state)
        value = discrepancy(y1, y2)
        return trade_off * value, (value, state)

    for _ in range(int(config.method.num_k)):
        grads, (value, model_state) = jax.grad(stage_c, has_aux=True)(params, model_state)
        params = sgd(params, grads, features)
    return params, model_state, value


def test_one_jitted_mcd_step_equals_its_three_stages_by_hand():
    overrides = {"method.num_k": 2, "method.trade_off": 0.7, "model.bottleneck": 8}
    overrides["method.mcc_weight"] = 0.3
    config, method, params, model_state, batch = _setup("mcd", **overrides)
    assert set(method.groups["features"]) == {"features", "bottleneck"}
    optimizer_for, schedule_for = optimizer_factories(config.optimizer)
    # The annealed schedule over 4 steps: a later update would get a visibly lower rate.
    course = make_course(2, 4)
    learning_rate = jnp.asarray(config.optimizer.learning_rate, jnp.float32)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=method.init_optimizer(optimizer_for(learning_rate, course), params),
        learning_rate=learning_rate,
        model_state=model_state,
    )
    assert set(state.opt_state) == {"features", "classifiers"}
    step = jax.jit(make_train_step(method, optimizer_for, schedule_for))
    new, sums = step(state, batch, jax.random.PRNGKey(1), course)
    by_hand = jax.jit(lambda p, s, b: _mcd_by_hand(config, method, p, s, b))
    want_params, want_state, want_discrepancy = by_hand(params, model_state, batch)
    assert int(new.step) == 1
    for got, want in ((new.params, want_params), (new.model_state, want_state)):
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, want)
    np.testing.assert_allclose(sums["discrepancy"], 4 * want_discrepancy, rtol=1e-5)
    assert float(sums["target_count"]) == 4 and float(sums["source_count"]) == 5
    for part in params:  # every part moved
        moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), new.params[part], params[part])
        assert all(jax.tree.leaves(moved)), part
    assert float(want_discrepancy) > 0


def test_mcd_resumes_bit_for_bit(tmp_path, train_whole_and_resumed):
    flags = ["--config.adaptation=mcd", "--config.method.num_k=1", "--config.batch_size=32"]
    whole, parts = train_whole_and_resumed(tmp_path, [*flags, "--config.data.limit=64"])
    assert parts == whole
    assert len(whole) == 2


def test_mcd_refuses_no_feature_updates_and_copies_pretrained_hidden_layers():
    with pytest.raises(ConfigError, match="method.num_k=0"):
        _setup("mcd", **{"method.num_k": 0})
    _, method, params, _, _ = _setup("mcd")
    assert jax.tree.map(jnp.shape, params["classifier_2"]) == jax.tree.map(
        jnp.shape, params["classifier"]
    )
    assert method.init_params(params) is params  # random init: two independent classifiers
    method.config.model.pretrained = "weights.msgpack"
    copied = method.init_params(params)
    for layer in ("hidden_0", "hidden_1"):
        np.testing.assert_array_equal(
            copied["classifier_2"][layer]["kernel"], params["classifier"][layer]["kernel"]
        )
    assert not np.allclose(
        copied["classifier_2"]["output"]["kernel"], params["classifier"]["output"]["kernel"]
    )


@pytest.mark.parametrize("adaptation", ["cdan", "cdan_e", "mdd"])
def test_methods_that_train_only_through_the_reversal_refuse_inverted_labels(adaptation):
    with pytest.raises(ConfigError, match="grl.objective='inverted_labels'"):
        _setup(adaptation, **{"grl.objective": "inverted_labels"})
    _setup("dann", **{"grl.objective": "inverted_labels"})  # DANN's alternative objective


# -- MDD --------------------------------------------------------------------------------------


def _mdd_by_hand(config, method, params, model_state, batch):
    """The class loss and the transfer loss -D written out as functions of the features, the
    classifier and the adversarial head, with no reversal layer: ``(gradients, -D)`` with the
    features' gradient the class loss's minus coefficient x trade-off x the transfer loss's."""
    net, rows, margin = method.network, ROWS, config.method.margin
    s_mask, t_mask = batch["source_mask"], batch["target_mask"]

    def embed(feature_params):
        images = _images(method, batch)
        return net.embed(params | {"features": feature_params}, model_state, images, train=True)[0]

    def class_loss(h, classifier):
        p = params | {"classifier": classifier}
        y = net.run(p, model_state, "classifier", h, train=True)[0]
        return _cross_entropy(y[:rows], batch["source_labels"], s_mask)

    def transfer_loss(h, adversarial):
        y = net.run(params, model_state, "classifier", h, train=True)[0]
        p = params | {"adversarial_classifier": adversarial}
        y_adv = net.run(p, model_state, "adversarial_classifier", h, train=True)[0]
        picked = jax.nn.log_softmax(y_adv)[jnp.arange(2 * rows), jnp.argmax(y, -1)]
        source_term = _masked_mean(-picked[:rows], s_mask)
        target_term = jnp.log(jnp.minimum(1 - jnp.exp(picked[rows:]) + 1e-6, 1))
        return -(-margin * source_term + _masked_mean(target_term, t_mask))

    h, pull_back = jax.vjp(embed, params["features"])
    dclass_h, dclass_classifier = jax.grad(class_loss, argnums=(0, 1))(h, params["classifier"])
    adversarial = params["adversarial_classifier"]
    dtransfer_h, dtransfer_adv = jax.grad(transfer_loss, argnums=(0, 1))(h, adversarial)
    trade_off, coefficient = config.method.trade_off, config.grl.coefficient
    (features,) = pull_back(dclass_h - coefficient * trade_off * dtransfer_h)
    grads = {
        "features": features,
        "classifier": dclass_classifier,  # the argmax pseudo-labels carry no gradient
        "adversarial_classifier": jax.tree.map(lambda g: trade_off * g, dtransfer_adv),
    }
    return grads, transfer_loss(h, adversarial)


def test_mdd_gradient_is_the_reversed_transfer_gradient_for_the_features():
    overrides = {
        "method.trade_off": 0.7,
        "method.margin": 3.0,
        "method.adversarial_hidden": 12,
        "grl.schedule": "constant",
        "grl.coefficient": 0.4,
    }
    config, method, params, model_state, batch = _setup("mdd", **overrides)
    assert set(params["adversarial_classifier"]) == {"hidden_0", "output"}
    assert params["adversarial_classifier"]["output"]["kernel"].shape == (12, CLASSES)
    progress = {"step": 0, "steps_per_epoch": 2, "total_steps": 4, "warmup_steps": 0}
    progress = jax.tree.map(jnp.int32, progress)
    grad_fn = jax.jit(jax.grad(method.loss, has_aux=True))
    grads, (sums, _) = grad_fn(params, model_state, batch, jax.random.PRNGKey(1), progress)
    by_hand = jax.jit(lambda p, s, b: _mdd_by_hand(config, method, p, s, b))
    want, transfer = by_hand(params, model_state, batch)
    for part, value in want.items():
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), grads[part], value
        )
    np.testing.assert_allclose(sums["transfer_loss"], transfer, rtol=1e-6)
    assert float(sums["grl_coefficient"]) == pytest.approx(0.4)

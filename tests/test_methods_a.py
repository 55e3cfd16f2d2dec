"""CDAN, CDAN+E, DAN, JAN and MCC: trained through the command line, their fused losses against
straightforward TLlib-style computations, padding, resumes and the MCC regulariser."""

import functools
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann import losses, train
from jaxdann.methods import METHODS
from jaxdann.models.grl import reverse_gradient
from jaxdann.training.model_setup import build_from_config, initial_variables

TINY = ["--config.data.limit=96", "--config.log_every_epoch=false"]
SMALL_HEADS = ["--config.method.discriminator_hidden=16", "--config.method.randomized_dim=64"]
PROGRESS = {"step": 5, "steps_per_epoch": 10, "total_steps": 20, "warmup_steps": 0}
ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


# -- through the command line ------------------------------------------------------------------


# DAN (with the MCC regulariser) by default; the others with -m slow. Every method's loss has
# its own numeric test in test_losses and below.
@pytest.mark.parametrize(
    "name,flags",
    [
        pytest.param("cdan", SMALL_HEADS, marks=pytest.mark.slow),
        ("dan", ["--config.method.linear_mmd=true", "--config.method.mcc_weight=0.5"]),
        pytest.param("jan", [], marks=pytest.mark.slow),
        pytest.param("mcc", [], marks=pytest.mark.slow),
    ],
)
def test_each_method_trains_through_the_command_line(tmp_path, name, flags):
    workdir = str(tmp_path / name)
    args = ["--workdir", workdir, f"--config.adaptation={name}", "--config.epochs=1"]
    assert train.main([*args, *TINY, *flags]) == 0
    (row,) = _rows(workdir)
    method = METHODS.get(name)
    expected = method.epoch_metrics
    if "--config.method.mcc_weight=0.5" in flags:
        expected = (*expected, "mcc_regularizer")
    assert set(expected) <= set(row)
    assert all(np.isfinite(row[key]) for key in expected)
    assert "domain_loss_source" not in row
    with open(os.path.join(workdir, "summary.json")) as handle:
        assert json.load(handle)["adaptation"] == name


def test_the_epoch_metrics_name_each_methods_own_losses():
    common = ("learning_rate", "class_loss", "source_accuracy")
    cdan = ("learning_rate", "grl_coefficient", "class_loss", "source_accuracy")
    cdan += ("transfer_loss", "domain_accuracy")
    assert METHODS.get("cdan").epoch_metrics == METHODS.get("cdan_e").epoch_metrics == cdan
    assert METHODS.get("dan").epoch_metrics == (*common, "mmd")
    assert METHODS.get("jan").epoch_metrics == (*common, "jmmd")
    assert METHODS.get("mcc").epoch_metrics == (*common, "mcc")
    labels = [METHODS.get(name).label for name in ("cdan", "cdan_e", "dan", "jan", "mcc")]
    assert labels == ["CDAN", "CDAN+E", "DAN", "JAN", "MCC"]


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.method.mcc_weight=0.1", "method.mcc_weight=0.1: adaptation='none'"),
        ("--config.method.kernel_alphas=a,b", "method.kernel_alphas='a,b'"),
    ],
)
def test_a_setting_a_method_cannot_use_is_one_error_line(tmp_path, capsys, flag, message):
    adaptation = "dan" if "kernel" in flag else "none"
    args = ["--workdir", str(tmp_path / "x"), f"--config.adaptation={adaptation}", flag]
    assert train.main([*args, "--config.epochs=1", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config key") and message in err


@pytest.mark.slow  # resuming BatchNorm state: test_extension's bottleneck run, by default
def test_cdan_e_resumes_bit_for_bit(tmp_path, train_whole_and_resumed):
    whole, parts = train_whole_and_resumed(
        tmp_path, ["--config.adaptation=cdan_e", *TINY, *SMALL_HEADS]
    )
    assert parts == whole
    assert set(METHODS.get("cdan_e").epoch_metrics) <= set(whole[0])
    # The discriminator's BatchNorm statistics are checkpointed with the parameters.
    with open(tmp_path / "parts" / "checkpoints" / "2" / "default" / "_METADATA") as handle:
        assert "domain_discriminator" in handle.read()


# -- the fused losses against straightforward computations --------------------------------------


def _setup(adaptation, bottleneck=0, batch=4, padding=0, seed=0, randomized="auto"):
    """The demo's network with small heads, its method, initial variables and one batch of
    ``batch`` real rows per domain plus ``padding`` rows of mask 0."""
    config = config_lib.demo_config()
    config.adaptation = adaptation
    config.model.bottleneck = bottleneck
    config.method.discriminator_hidden = 16
    config.method.randomized_dim = 64
    config.method.randomized = randomized
    config.method.trade_off = 0.7
    config.grl.schedule = "constant"
    network, method = build_from_config(config, 10, mean=0.5, std=0.25)
    params, model_state = initial_variables(network, method, (28, 28, 3), jax.random.key(seed))
    rng = np.random.default_rng(seed)
    rows = batch + padding

    def images():
        return rng.integers(0, 256, (rows, 28, 28, 3), dtype=np.uint8)

    mask = np.array([1.0] * batch + [0.0] * padding, np.float32)
    data = {
        "source_images": images(),
        "source_labels": rng.integers(0, 10, rows).astype(np.int32),
        "source_mask": mask,
        "target_images": images(),
        "target_mask": mask,
    }
    return method, params, model_state, data


def _fused(method, params, model_state, batch):
    fn = jax.value_and_grad(method.loss, has_aux=True)
    (loss, (_, state)), grads = jax.jit(fn)(params, model_state, batch, jax.random.key(1), PROGRESS)
    return loss, grads, state


def _assert_close(actual, expected, rtol=2e-4, atol=2e-6):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected
    )


def _torch_style_cdan_e(method, randomize, params, model_state, batch, rng, progress):
    """TLlib's CDAN+E training loop, written out: one pass over cat(x_s, x_t), the detached
    softmax, the map, the reversal layer on the map, DomainDiscriminator's layers with
    batch-statistics BatchNorm, a sigmoid, entropy weights and torch's weighted
    binary_cross_entropy (mean)."""
    source, target, key = method.prepare(batch, rng)
    net, n = method.network, source.shape[0]
    f, state = net.embed(
        params, model_state, jnp.concatenate([source, target]), train=True, rng=key
    )
    y, state = net.run(params, state, "classifier", f, train=True, rng=key)
    log_p = jax.nn.log_softmax(y[:n])
    cls_loss = -jnp.mean(log_p[jnp.arange(n), batch["source_labels"]])
    g = jax.lax.stop_gradient(jax.nn.softmax(y))
    if randomize:
        rf, rg = losses.randomized_map_matrices(jax.random.key(0), f.shape[1], g.shape[1], 64)
        h = (f @ rf) * (g @ rg) / np.sqrt(64.0)
    else:
        h = jnp.einsum("bc,bf->bcf", g, f).reshape(2 * n, -1)
    x = reverse_gradient(h, 0.3)  # demo: grl.coefficient=0.3, constant
    d = params["domain_discriminator"]
    for i in range(2):
        x = x @ d[f"hidden_{i}"]["kernel"] + d[f"hidden_{i}"]["bias"]
        mean, var = x.mean(0), x.var(0)
        x = (x - mean) / jnp.sqrt(var + 1e-5) * d[f"norm_{i}"]["scale"] + d[f"norm_{i}"]["bias"]
        x = jnp.maximum(x, 0.0)
    prob = jax.nn.sigmoid(x @ d["output"]["kernel"] + d["output"]["bias"])[:, 0]
    label = jnp.concatenate([jnp.ones(n), jnp.zeros(n)])
    entropy = -jnp.sum(g * jnp.log(g + 1e-5), axis=1)
    weight = 1.0 + jnp.exp(-entropy)
    weight = weight / jnp.sum(weight) * 2 * n
    log_d, log_1md = jnp.maximum(jnp.log(prob), -100), jnp.maximum(jnp.log(1 - prob), -100)
    transfer = jnp.mean(weight * -(label * log_d + (1 - label) * log_1md))
    return cls_loss + 0.7 * transfer


@pytest.mark.parametrize(
    ("bottleneck", "randomized", "randomize"),
    [(0, "auto", True), (8, "auto", False), (8, "always", True), (0, "never", False)],
    ids=["auto_wide_randomized", "auto_narrow_full", "always_randomized", "never_full"],
)
def test_the_fused_cdan_e_loss_has_tllibs_gradient(bottleneck, randomized, randomize):
    # The demo CNN's 768 features x 10 classes exceed 4096; a bottleneck of 8 gives 80.
    method, params, model_state, batch = _setup(
        "cdan_e", bottleneck=bottleneck, randomized=randomized
    )
    width = params["domain_discriminator"]["hidden_0"]["kernel"].shape[0]
    assert width == (64 if randomize else (bottleneck or 768) * 10)
    loss, grads, _ = _fused(method, params, model_state, batch)
    reference = functools.partial(_torch_style_cdan_e, method, randomize)
    reference = jax.jit(jax.value_and_grad(reference))
    expected_loss, expected = reference(params, model_state, batch, jax.random.key(1), PROGRESS)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    _assert_close(grads, expected)
    assert float(jnp.abs(grads["domain_discriminator"]["output"]["kernel"]).sum()) > 0


def _index_matrix(n):
    """TLlib's quadratic index matrix over [source; target], from its definition."""
    index = np.zeros((2 * n, 2 * n))
    for i, j in itertools.product(range(n), range(n)):
        if i != j:
            index[i, j] = index[i + n, j + n] = 1.0 / (n * (n - 1))
        index[i, j + n] = index[i + n, j] = -1.0 / (n * n)
    return jnp.asarray(index, jnp.float32)


def _torch_style_dan(method, params, model_state, batch, rng, progress):
    """TLlib's DAN loop: cat(x_s, x_t) through the network, GaussianKernel(alpha) for 2^-3..2^1
    on explicit pairwise differences, the index matrix and the 2 / (n - 1) term."""
    source, target, key = method.prepare(batch, rng)
    net, n = method.network, source.shape[0]
    f, _ = net.embed(params, model_state, jnp.concatenate([source, target]), train=True, rng=key)
    y, _ = net.run(params, model_state, "classifier", f, train=True, rng=key)
    log_p = jax.nn.log_softmax(y[:n])
    cls_loss = -jnp.mean(log_p[jnp.arange(n), batch["source_labels"]])
    distances = jnp.sum((f[None, :, :] - f[:, None, :]) ** 2, axis=2)
    bandwidth = jax.lax.stop_gradient(distances.mean())
    kernel = sum(jnp.exp(-distances / (2 * alpha * bandwidth)) for alpha in ALPHAS)
    mmd = jnp.sum(kernel * _index_matrix(n)) + 2.0 / (n - 1)
    return cls_loss + 0.7 * mmd


def test_the_fused_dan_loss_has_tllibs_gradient_and_ignores_padding_rows():
    method, params, model_state, batch = _setup("dan")
    loss, grads, _ = _fused(method, params, model_state, batch)
    reference = jax.jit(jax.value_and_grad(functools.partial(_torch_style_dan, method)))
    expected_loss, expected = reference(params, model_state, batch, jax.random.key(1), PROGRESS)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    _assert_close(grads, expected, rtol=1e-3, atol=1e-5)
    # Two rows of padding per domain (mask 0) change neither the loss nor its gradient.
    _, _, _, padded = _setup("dan", padding=2)
    for key in ("source_images", "target_images", "source_labels"):
        padded[key][:4] = batch[key]
    padded_loss, padded_grads, _ = _fused(method, params, model_state, padded)
    np.testing.assert_allclose(padded_loss, loss, rtol=1e-5)
    _assert_close(padded_grads, grads, rtol=1e-4, atol=1e-6)


# Four methods by default (a gradient reversal, an MMD, a margin, MCC itself); the rest slow.
@pytest.mark.parametrize(
    "adaptation",
    [
        "dann",
        pytest.param("cdan_e", marks=pytest.mark.slow),
        "dan",
        pytest.param("jan", marks=pytest.mark.slow),
        "mdd",
        "mcc",
        pytest.param("afn", marks=pytest.mark.slow),
    ],
)
def test_the_mcc_regulariser_adds_mcc_on_the_target_logits(adaptation):
    method, params, model_state, batch = _setup(adaptation)
    plain, _, _ = _fused(method, params, model_state, batch)
    method.config.method.mcc_weight = 0.5
    regularised = type(method)(method.config, method.network, mean=0.5, std=0.25)
    assert regularised.epoch_metrics[-1] == "mcc_regularizer"
    assert type(regularised).epoch_metrics[-1] != "mcc_regularizer"
    fn = jax.jit(regularised.loss)
    with_mcc, (sums, _) = fn(params, model_state, batch, jax.random.key(1), PROGRESS)
    np.testing.assert_allclose(with_mcc, plain + 0.5 * sums["mcc_regularizer"], rtol=1e-5)

    # The regulariser is MCC of the classifier's logits on the target images (no dropout here).
    @jax.jit  # compiled once, not op by op
    def expected_mcc(params, model_state, batch):
        target = regularised.prepare(batch, jax.random.key(1))[1]
        features, state = regularised.network.embed(params, model_state, target, train=True)
        logits, _ = regularised.network.run(params, state, "classifier", features, train=True)
        return losses.mcc(logits, temperature=2.5, mask=batch["target_mask"])

    expected = expected_mcc(params, model_state, batch)
    np.testing.assert_allclose(sums["mcc_regularizer"], expected, rtol=1e-5)
    assert 0 < float(sums["mcc_regularizer"]) < 1

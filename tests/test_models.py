"""The Flax AlexNet equals torchvision's, logits and every intermediate layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann.config import ConfigError, base_config, validate
from jaxdann.convert import torchvision_to_flax
from jaxdann.models import (
    AlexNet,
    AlexNetFeatures,
    BatchNorm,
    Bottleneck,
    SpaceToDepthConv,
    adaptive_avg_pool,
    max_pool,
)
from jaxdann.models.layers import Conv, row_mask
from jaxdann.training.model_setup import build_from_config

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _torch_alexnet(num_classes, seed=0):
    torch.manual_seed(seed)
    return torchvision.models.alexnet(weights=None, num_classes=num_classes).eval()


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def _network(arch, adaptation, **model):
    """``(network, method)`` for 7 classes as a config describes them."""
    config = base_config()
    config.adaptation = adaptation
    config.model.arch = arch
    config.model.pretrained = "none"
    for key, value in model.items():
        config.model[key] = value
    validate(config)
    return build_from_config(config, 7)


def _random_params(network, method, image_shape, abstract=False):
    """Every part randomly initialised on its own (shapes only with ``abstract``)."""

    def init():
        head_inputs = type(method).head_inputs
        return network.init(jax.random.PRNGKey(0), image_shape, head_inputs)["params"]

    return jax.eval_shape(init) if abstract else init()


def _assert_close_to_scale(actual, expected, tolerance=1e-4):
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("num_classes", [1000, 7])
@pytest.mark.parametrize("size", [224, 100])
def test_logits_match_torchvision(num_classes, size):
    torch_model = _torch_alexnet(num_classes)
    params = torchvision_to_flax(torch_model.state_dict())
    images = _images(size)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images)).numpy()
    actual = AlexNet(num_classes).apply({"params": params}, images.transpose(0, 2, 3, 1))
    assert actual.shape == (2, num_classes)
    _assert_close_to_scale(np.asarray(actual), expected)


def test_every_layer_matches_torchvision():
    """At 100 px the final map is 2x2, so adaptive pooling to 6x6 is not the identity."""
    torch_model = _torch_alexnet(1000, seed=1)
    params = torchvision_to_flax(torch_model.state_dict())
    images = _images(100, seed=1)
    torch_outputs = {}
    layers = {
        "features.0": ("features", "conv1"),
        "features.3": ("features", "conv2"),
        "features.6": ("features", "conv3"),
        "features.8": ("features", "conv4"),
        "features.10": ("features", "conv5"),
        "avgpool": None,
        "classifier.1": ("classifier", "hidden_0"),
        "classifier.4": ("classifier", "hidden_1"),
        "classifier.6": ("classifier", "output"),
    }
    for name in layers:
        module = torch_model.get_submodule(name)
        module.register_forward_hook(
            lambda _m, _i, out, name=name: torch_outputs.__setitem__(
                name, out.numpy().copy()
            )  # ReLUs act in place
        )
    with torch.no_grad():
        torch_model(torch.from_numpy(images))
    _, state = AlexNet(1000).apply(
        {"params": params}, images.transpose(0, 2, 3, 1), capture_intermediates=True
    )
    captured = state["intermediates"]
    assert torch_outputs["avgpool"].shape[-2:] == (6, 6)
    for torch_name, path in layers.items():
        expected = torch_outputs[torch_name]
        if path is None:
            continue
        actual = np.asarray(captured[path[0]][path[1]]["__call__"][0])
        if actual.ndim == 4:
            actual = actual.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        assert actual.shape == expected.shape, torch_name
        _assert_close_to_scale(actual, expected)


@pytest.mark.parametrize("size,out", [(13, 6), (7, 6), (2, 6), (1, 6), (6, 6), (11, 4)])
def test_adaptive_avg_pool_matches_torch(size, out):
    x = np.random.default_rng(0).standard_normal((2, 5, size, size + 3)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy()
    actual = adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), out)
    np.testing.assert_allclose(np.asarray(actual).transpose(0, 3, 1, 2), expected, atol=1e-6)


@pytest.mark.parametrize("window,stride,size", [(3, 2, 13), (3, 2, 14), (2, 2, 12), (3, 1, 7)])
def test_max_pool_and_its_gradient_match_torch_with_ties(window, stride, size):
    # Values from a small set of integers: most windows hold ties, which torch's kernels resolve
    # by sending the gradient to the first maximum; overlapping windows add up.
    rng = np.random.default_rng(window * 100 + stride * 10 + size)
    x = rng.integers(0, 4, (2, 3, size, size + 1)).astype(np.float32)
    g = rng.standard_normal(
        (2, 3, (size - window) // stride + 1, (size + 1 - window) // stride + 1)
    )
    g = g.astype(np.float32)
    x_torch = torch.from_numpy(x).requires_grad_()
    y_torch = torch.nn.functional.max_pool2d(x_torch, window, stride)
    y_torch.backward(torch.from_numpy(g))

    def nhwc(a):
        return jnp.asarray(a.transpose(0, 2, 3, 1))

    y, vjp = jax.vjp(lambda x: max_pool(x, window, stride), nhwc(x))
    (grad,) = vjp(nhwc(g))
    np.testing.assert_array_equal(np.asarray(y).transpose(0, 3, 1, 2), y_torch.detach().numpy())
    np.testing.assert_allclose(
        np.asarray(grad).transpose(0, 3, 1, 2), x_torch.grad.numpy(), rtol=0, atol=1e-6
    )
    # Every window sends its whole gradient somewhere, once.
    np.testing.assert_allclose(float(grad.sum()), float(g.sum()), rtol=1e-5)


@pytest.mark.parametrize("window,stride", [(3, 2), (2, 2)])
def test_max_pool_sends_a_window_gradient_to_its_nan_as_torch_does(window, stride):
    x = np.arange(2 * 7 * 7, dtype=np.float32).reshape(1, 2, 7, 7)
    x[0, 0, 1, 1] = x[0, 1, 4, 5] = np.nan
    x_torch = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.max_pool2d(x_torch, window, stride).sum().backward()

    def pool(x):
        return max_pool(x, window, stride)

    grad = jax.grad(lambda x: jnp.sum(pool(x)))(jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert x_torch.grad[0, 0, 1, 1] == 1  # the NaN's window took it
    np.testing.assert_array_equal(np.asarray(grad).transpose(0, 3, 1, 2), x_torch.grad.numpy())
    bf16 = jax.grad(lambda x: jnp.sum(pool(x)).astype(jnp.float32))
    assert bf16(jnp.ones((1, 7, 7, 2), jnp.bfloat16)).dtype == jnp.bfloat16


def test_sums_written_as_products_ask_for_full_float32_precision():
    # A GPU's default float32 product may round to TF32; CPUs compute these products exactly
    # either way, so the request itself is what a CPU test can check.
    x = jnp.ones((2, 5, 5, 4))
    norm = BatchNorm()
    variables = norm.init(jax.random.key(0), x)

    conv = Conv(3, 3, 1, 1)  # its bias gradient is a product too
    conv_params = conv.init(jax.random.key(1), x[:, :2, :2])["params"]

    def loss(params, x):
        y, _ = norm.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(conv.apply({"params": conv_params}, adaptive_avg_pool(y, 2)) ** 2)

    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables["params"], x).as_text()
    products = [line for line in text.splitlines() if "dot_general" in line]
    assert len(products) >= 6  # statistics, bias and scale gradients, the pool's, conv bias
    assert all("precision = [HIGHEST, HIGHEST]" in line for line in products), products


def _count(params):
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


def test_parameter_counts():
    images = jnp.zeros((1, 224, 224, 3))
    params = jax.eval_shape(lambda: AlexNet(1000).init(jax.random.PRNGKey(0), images))["params"]
    assert _count(params) == 61_100_840  # torchvision's figure
    torch_count = sum(p.numel() for p in _torch_alexnet(1000).parameters())
    assert torch_count == 61_100_840

    dann_params = _random_params(*_network("alexnet", "dann"), (224, 224, 3), abstract=True)
    assert set(dann_params) == {"features", "classifier", "domain_classifier"}
    # AlexNet with a 7-way head (57,032,519) + a domain classifier of the classifier's structure
    # with 2 outputs (54,542,338). The seed reports 111,595,343: its domain head kept 7 outputs
    # (+20,485) and it counts alpha as a parameter (+1).
    assert _count(dann_params["features"]) + _count(dann_params["classifier"]) == 57_032_519
    assert _count(dann_params["domain_classifier"]) == 54_542_338
    assert _count(dann_params) == 111_595_343 - 20_485 - 1


def test_dropout_uses_the_dropout_rng_only_in_training():
    model = AlexNet(7)
    images = jnp.asarray(_images(63).transpose(0, 2, 3, 1))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
    apply = jax.jit(model.apply, static_argnames="train")  # compiled once, not op by op
    eval_a = apply({"params": params}, images)
    eval_b = apply({"params": params}, images, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = lambda key: apply(  # noqa: E731
        {"params": params}, images, train=True, rngs={"dropout": jax.random.PRNGKey(key)}
    )
    assert not np.allclose(train(1), eval_a)
    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    with pytest.raises(Exception, match="dropout"):
        apply({"params": params}, images, train=True)


def test_too_small_images_are_refused_with_the_minimum():
    with pytest.raises(ValueError, match="at least 63x63"):
        AlexNet(7).init(jax.random.PRNGKey(0), jnp.zeros((1, 62, 62, 3)))


def test_dann_without_adaptation_is_plain_alexnet():
    network, method = _network("alexnet", "none")
    images = jnp.asarray(_images(63).transpose(0, 2, 3, 1))
    params = _random_params(network, method, (63, 63, 3))
    assert network.names == ("features", "classifier")
    assert set(params) == {"features", "classifier"}
    np.testing.assert_allclose(
        network.logits(params, {}, images),
        AlexNet(7).apply({"params": params}, images),
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "kernel,stride,padding,size",
    # AlexNet's conv1 (its padded input ends 0-3 pixels short of a whole block), kernels that are
    # not a multiple of the stride, and (4, 4, 0, 13), whose input runs past the last block the
    # output reads (cropped by a negative padding).
    [(11, 4, 2, 63), (11, 4, 2, 66), (4, 4, 0, 13), (5, 2, 1, 12), (3, 2, 0, 10)],
)
def test_space_to_depth_conv_equals_the_strided_convolution(kernel, stride, padding, size, dtype):
    images = np.random.default_rng(size).standard_normal((2, size, size + 1, 3))
    images = jnp.asarray(images, jnp.float32)
    plain = nn.Conv(
        5, (kernel, kernel), strides=stride, padding=[(padding, padding)] * 2, dtype=dtype
    )
    s2d = SpaceToDepthConv(5, kernel, stride, padding, dtype)
    params = s2d.init(jax.random.PRNGKey(0), images)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, plain.init(jax.random.PRNGKey(0), images)
    )
    expected = plain.apply(params, images)
    actual = s2d.apply(params, images)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
    scale = float(jnp.max(jnp.abs(expected.astype(jnp.float32))))
    np.testing.assert_allclose(
        actual.astype(jnp.float32), expected.astype(jnp.float32), atol=tolerance * scale
    )
    grads = [
        jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply(p, images).astype(jnp.float32))))(params)
        for m in (plain, s2d)
    ]
    for leaf in ("kernel", "bias"):
        reference = grads[0]["params"][leaf]
        np.testing.assert_allclose(
            grads[1]["params"][leaf],
            reference,
            atol=tolerance * float(jnp.max(jnp.abs(reference))),
        )


@pytest.mark.parametrize("stem,pool_gradient", [("space_to_depth", "first_max"), ("conv", "xla")])
def test_each_alexnet_variant_computes_the_same_features(stem, pool_gradient):
    images = jnp.asarray(np.random.default_rng(1).standard_normal((2, 67, 70, 3)), jnp.float32)
    default = AlexNetFeatures()
    params = default.init(jax.random.PRNGKey(0), images)
    variant = AlexNetFeatures(stem=stem, pool_gradient=pool_gradient)
    # The same parameter tree and initial values: checkpoints and weights carry over.
    variant_params = variant.init(jax.random.PRNGKey(0), images)
    assert jax.tree.map(jnp.shape, variant_params) == jax.tree.map(jnp.shape, params)
    for name in ("conv1", "conv5"):
        np.testing.assert_array_equal(
            variant_params["params"][name]["kernel"], params["params"][name]["kernel"]
        )
    np.testing.assert_allclose(
        variant.apply(params, images), default.apply(params, images), rtol=1e-5, atol=1e-6
    )
    # The config keys reach the network's feature extractor.
    network, _ = _network("alexnet", "dann", stem=stem, pool_gradient=pool_gradient)
    assert dict(network.parts)["features"] == variant

    def loss(p, model):
        return jnp.sum(jnp.sin(model.apply(p, images)))

    expected, actual = (jax.grad(loss)(params, model) for model in (default, variant))
    for name in ("conv1", "conv2", "conv5"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(
                actual["params"][name][leaf],
                expected["params"][name][leaf],
                rtol=2e-4,
                atol=2e-5,
            )


def test_computation_variants_are_checked():
    with pytest.raises(ValueError, match="stem"):
        AlexNetFeatures(stem="s2d").init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ConfigError, match="model.pool_gradient.*alexnet only"):
        _network("small_cnn", "none", pool_gradient="xla")
    with pytest.raises(ConfigError, match="model.stem.*alexnet only"):
        _network("small_cnn", "none", stem="space_to_depth")


def _torch_batch_norm_state(norm):
    return {
        "params": {
            "scale": jnp.asarray(norm.weight.detach().numpy()),
            "bias": jnp.asarray(norm.bias.detach().numpy()),
        },
        "batch_stats": {
            "mean": jnp.asarray(norm.running_mean.numpy()),
            "var": jnp.asarray(norm.running_var.numpy()),
        },
    }


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 5)], ids=["1d", "2d"])
def test_batch_norm_matches_torch_in_train_and_eval_mode(shape):
    # torch: momentum 0.1, eps 1e-5, batch statistics in train mode (normalised with the biased
    # variance, the running variance updated with the unbiased one), running ones in eval mode.
    torch.manual_seed(0)
    features = shape[-1]
    norm = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(features)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(features) + 0.5)
        norm.bias.copy_(torch.randn(features))
    variables = _torch_batch_norm_state(norm)  # running mean 0 and variance 1, as Flax's init
    init = BatchNorm().init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_array_equal(init["batch_stats"]["var"], variables["batch_stats"]["var"])

    def nchw(x):  # torch's layout for x of ``shape`` (NC or NHWC)
        return torch.from_numpy(x if x.ndim == 2 else x.transpose(0, 3, 1, 2).copy())

    def nhwc(y):
        return y if y.ndim == 2 else y.transpose(0, 2, 3, 1)

    rng = np.random.default_rng(0)
    norm.train()
    for _ in range(3):
        x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
        with torch.no_grad():
            expected = nhwc(norm(nchw(x)).numpy())
        actual, updates = BatchNorm().apply(variables, jnp.asarray(x), train=True, mutable=True)
        variables = {**variables, **updates}
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
        for name, running in (("mean", norm.running_mean), ("var", norm.running_var)):
            np.testing.assert_allclose(
                variables["batch_stats"][name], running.numpy(), rtol=1e-5, atol=1e-5
            )
    norm.eval()
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(norm(nchw(x)).numpy())
    actual = BatchNorm().apply(variables, jnp.asarray(x), train=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 5), (1, 1, 1, 5)], ids=["1d", "2d"])
def test_batch_norm_refuses_one_value_per_channel_in_train_mode_as_torch_does(shape):
    norm = torch.nn.BatchNorm1d(5) if len(shape) == 2 else torch.nn.BatchNorm2d(5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norm(torch.zeros(shape[0], 5, *shape[1:-1]))
    variables = BatchNorm().init(jax.random.key(0), jnp.zeros(shape), train=True)  # init passes
    with pytest.raises(ConfigError, match="one value per channel .* raise batch_size"):
        BatchNorm().apply(variables, jnp.zeros(shape), train=True, mutable=True)
    BatchNorm().apply(variables, jnp.zeros(shape), train=False)  # running statistics: fine
    BatchNorm(frozen=True).apply(variables, jnp.zeros(shape), train=True, mutable=True)


@pytest.mark.parametrize("frozen", [False, True], ids=["train", "frozen"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_gradients_on_feature_maps_match_torch(dtype, frozen):
    """Train mode on NHWC maps (the custom VJPs): gradients of input, scale and bias, and the
    statistics, against torch's BatchNorm2d in float64 (bfloat16 input to its precision);
    ``frozen`` against torch's BatchNorm2d in eval mode (statistics unchanged)."""
    rng = np.random.default_rng(1)
    x = (3.0 + 2.0 * rng.standard_normal((4, 6, 5, 8))).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(8).double().train(not frozen)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8) + 0.5)
        norm.bias.copy_(torch.randn(8))
        norm.running_mean.copy_(3.0 + torch.randn(8))
        norm.running_var.copy_(4.0 + torch.rand(8))
    variables = _torch_batch_norm_state(norm)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)).requires_grad_(True)
    (norm(x_torch) * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()

    def loss(params, x):
        y, updates = BatchNorm(frozen=frozen).apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(y.astype(jnp.float32) * upstream), updates["batch_stats"]

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
    (grads, grad_x), stats = grad_fn(variables["params"], jnp.asarray(x, dtype))
    tolerance = 1e-4 if dtype == jnp.float32 else 2e-2
    expected_x = x_torch.grad.numpy().transpose(0, 2, 3, 1)
    _assert_close_to_scale(np.asarray(grad_x, np.float32), expected_x, tolerance)
    _assert_close_to_scale(grads["scale"], norm.weight.grad.numpy(), tolerance)
    _assert_close_to_scale(grads["bias"], norm.bias.grad.numpy(), tolerance)
    for name, running in (("mean", norm.running_mean), ("var", norm.running_var)):
        _assert_close_to_scale(stats[name], running.detach().numpy(), tolerance)


@pytest.mark.parametrize("shape", [(6, 8), (6, 3, 2, 8)], ids=["1d", "2d"])
def test_padding_rows_are_left_out_of_batch_statistics_as_torch_without_them(shape):
    """Rows 1 and 4 are padding (mask 0, any values): outputs of the real rows, every gradient
    and the running statistics equal torch's BatchNorm on the four real rows alone; a padding
    row's input gets no gradient through the statistics (its output is not in the loss)."""
    rng = np.random.default_rng(2)
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    x[[1, 4]] = 1e3 * rng.standard_normal(x[[1, 4]].shape)  # padding: far from the real rows
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    real = mask.astype(bool)
    upstream = rng.standard_normal(shape).astype(np.float32) * mask.reshape(
        -1, *[1] * (len(shape) - 1)
    )
    torch.manual_seed(0)
    norm = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(8).double().train()
    variables = _torch_batch_norm_state(norm)

    def nchw(a):
        return torch.from_numpy((a if a.ndim == 2 else a.transpose(0, 3, 1, 2)).astype(np.float64))

    x_torch = nchw(x[real]).requires_grad_(True)
    (norm(x_torch) * nchw(upstream[real])).sum().backward()

    def loss(params, x):
        with row_mask(jnp.asarray(mask)):
            y, updates = BatchNorm().apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
        return jnp.sum(y * upstream), updates["batch_stats"]

    (grads, grad_x), stats = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], jnp.asarray(x)
    )
    expected_x = x_torch.grad.numpy()
    expected_x = expected_x if len(shape) == 2 else expected_x.transpose(0, 2, 3, 1)
    _assert_close_to_scale(np.asarray(grad_x)[real], expected_x, 1e-4)
    np.testing.assert_array_equal(np.asarray(grad_x)[~real], 0.0)
    _assert_close_to_scale(grads["scale"], norm.weight.grad.numpy(), 1e-4)
    _assert_close_to_scale(grads["bias"], norm.bias.grad.numpy(), 1e-4)
    for name, running in (("mean", norm.running_mean), ("var", norm.running_var)):
        _assert_close_to_scale(stats[name], running.detach().numpy(), 1e-4)
    with pytest.raises(ValueError, match="row mask .* does not fit"):
        with row_mask(jnp.ones(5)):
            BatchNorm().apply(variables, jnp.asarray(x), train=True, mutable=True)


def test_bottleneck_matches_torch_linear_batch_norm_relu_in_train_mode():
    torch.manual_seed(0)
    width, fan_in = 6, 10
    linear, norm = torch.nn.Linear(fan_in, width), torch.nn.BatchNorm1d(width)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width) + 0.5)
        norm.bias.copy_(torch.randn(width))
    block = torch.nn.Sequential(linear, norm, torch.nn.ReLU()).train()
    x = np.random.default_rng(0).standard_normal((8, fan_in)).astype(np.float32)
    bottleneck = Bottleneck(width)
    init = bottleneck.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    state = _torch_batch_norm_state(norm)
    variables = {
        "params": {
            "dense": {  # Flax's kernel is torch's weight transposed
                "kernel": jnp.asarray(linear.weight.detach().numpy().T),
                "bias": jnp.asarray(linear.bias.detach().numpy()),
            },
            "norm": state["params"],
        },
        "batch_stats": {"norm": state["batch_stats"]},
    }
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, variables)

    x_torch = torch.from_numpy(x)
    expected = block(x_torch)
    expected.sin().sum().backward()

    def loss(params):
        y, updates = bottleneck.apply(
            {**variables, "params": params}, jnp.asarray(x), train=True, mutable=["batch_stats"]
        )
        return jnp.sum(jnp.sin(y)), (y, updates)

    grads, (actual, updates) = jax.grad(loss, has_aux=True)(variables["params"])
    assert float((actual == 0).mean()) > 0.1  # the ReLU cuts something
    np.testing.assert_allclose(actual, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    for name, running in (("mean", norm.running_mean), ("var", norm.running_var)):
        np.testing.assert_allclose(
            updates["batch_stats"]["norm"][name], running.numpy(), rtol=1e-5, atol=1e-5
        )
    # Gradients through the batch statistics, as torch's autograd takes them.
    for got, want in (
        (grads["dense"]["kernel"], linear.weight.grad.numpy().T),
        (grads["norm"]["scale"], norm.weight.grad.numpy()),
        (grads["norm"]["bias"], norm.bias.grad.numpy()),
    ):
        _assert_close_to_scale(np.asarray(got), want, 1e-5)
    # The batch mean cancels the dense bias: its gradient is 0 up to rounding, in both.
    scale = float(np.abs(linear.weight.grad.numpy()).max())
    for bias_grad in (np.asarray(grads["dense"]["bias"]), linear.bias.grad.numpy()):
        np.testing.assert_allclose(bias_grad, 0.0, rtol=0, atol=1e-5 * scale)

"""The Flax ResNets equal torchvision's: logits, every block, BatchNorm in train mode (outputs,
running statistics, gradients), the frozen mode, and parameter counts. ResNet-18 trains with
DANN and MCD: BatchNorm over source + target in one pass, frozen statistics, pretrained
statistics, checkpoints, resumes and several devices."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdann import train
from jaxdann.config import base_config, validate
from jaxdann.convert import ConversionError, save_params, torchvision_to_flax
from jaxdann.methods import METHODS
from jaxdann.models import ResNet, ResNet18, ResNet34, ResNet50, ResNetFeatures
from jaxdann.training.model_setup import build_from_config, initial_variables, read_pretrained

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _torch_resnet(arch, num_classes=1000, seed=0):
    """A random torchvision ResNet whose BatchNorm layers hold non-trivial affine parameters and
    running statistics (fresh ones are 1, 0, 0, 1, which would hide layout mistakes)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def _nhwc(images):
    return images.transpose(0, 2, 3, 1)


def _assert_close_to_scale(actual, expected, tolerance=1e-4):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize(
    "arch,num_classes,size",
    [("resnet18", 1000, 32), ("resnet18", 7, 64), ("resnet50", 1000, 32)],
)
def test_logits_match_torchvision_in_eval_mode(arch, num_classes, size):
    torch_model = _torch_resnet(arch, num_classes)
    variables = torchvision_to_flax(torch_model.state_dict(), arch)
    images = _images(size)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images)).numpy()
    actual = jax.jit(ResNet(arch, num_classes).apply)(variables, _nhwc(images))
    _assert_close_to_scale(actual, expected)


def test_every_block_matches_torchvision():
    """At 64 px: the stem, each of the eight blocks and the pooled features."""
    torch_model = _torch_resnet("resnet18", seed=1)
    variables = torchvision_to_flax(torch_model.state_dict(), "resnet18")
    images = _images(64, seed=1)
    captured = {}

    def keep(name):
        return lambda module, inputs, output: captured.__setitem__(name, output.numpy().copy())

    names = ["bn1", "maxpool", "avgpool"]
    names += [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    for name in names:
        torch_model.get_submodule(name).register_forward_hook(keep(name))
    with torch.no_grad():
        torch_model(torch.from_numpy(images))
    _, state = ResNet18().apply(
        variables, _nhwc(images), train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    flax = state["intermediates"]["features"]
    _assert_close_to_scale(flax["bn1"]["__call__"][0], _nhwc(captured["bn1"]))
    for name in names[3:]:
        flax_name = name.replace(".", "_")
        _assert_close_to_scale(flax[flax_name]["__call__"][0], _nhwc(captured[name]))
    _assert_close_to_scale(flax["__call__"][0], captured["avgpool"][:, :, 0, 0])


def _torch_statistics(model):
    return {
        name: (module.running_mean.numpy().copy(), module.running_var.numpy().copy())
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
    }


def _flax_statistics(batch_stats):
    """torch module name -> (running mean, running variance) from a ResNet's ``batch_stats``."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch_stats)[0]:
        *modules, kind = (key.key for key in path)
        name = ".".join(modules[1:]).replace("_", ".").replace("downsample.conv", "downsample.0")
        name = name.replace("downsample.bn", "downsample.1")
        out.setdefault(name, {})[kind] = np.asarray(leaf)
    return {name: (v["mean"], v["var"]) for name, v in out.items()}


def test_train_mode_matches_torch_over_several_passes():
    """Three train-mode passes on different batches: each pass's logits, the parameter
    gradients of the last, then every running statistic (momentum 0.1,
    unbiased variance) and the eval-mode logits they give. The reference is torch in float64.

    Gradients are compared from the first block on: below the stem's max pool, a window whose
    two largest values differ in the last float32 bits sends its gradient to whichever rounding
    makes the maximum, and train-mode BatchNorm spreads that over the channel (a batch of 8 at
    32 px holds one to three such windows; there torch's own float32 input gradient strays from
    its float64 one by 3% of its scale). The max pool's tie rule has its own test."""
    torch_model = _torch_resnet("resnet18", num_classes=5, seed=2)
    variables = torchvision_to_flax(torch_model.state_dict(), "resnet18")
    torch_model = torch_model.double().train()
    params, batch_stats = variables["params"], variables["batch_stats"]
    model = ResNet18(5)

    def loss(params, batch_stats, images):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=True
        )
        return jnp.sum(logits * jnp.arange(5.0)), (logits, updates["batch_stats"])

    grad_fn = jax.jit(jax.grad(loss, has_aux=True))
    for seed in range(3):
        images = _images(32, batch=8, seed=10 + seed) * (1 + seed)
        torch_images = torch.from_numpy(images).double()
        torch_model.zero_grad()
        torch_logits = torch_model(torch_images)
        (torch_logits * torch.arange(5.0, dtype=torch.float64)).sum().backward()
        param_grads, (logits, batch_stats) = grad_fn(params, batch_stats, _nhwc(images))
        _assert_close_to_scale(logits, torch_logits.detach().numpy())
    kernel_grad = torch_model.layer1[0].conv1.weight.grad.numpy().transpose(2, 3, 1, 0)
    _assert_close_to_scale(param_grads["features"]["layer1_0"]["conv1"]["kernel"], kernel_grad)
    scale_grad = torch_model.layer4[1].bn2.weight.grad.numpy()
    _assert_close_to_scale(param_grads["features"]["layer4_1"]["bn2"]["scale"], scale_grad)
    fc_grad = torch_model.fc.weight.grad.numpy().T
    _assert_close_to_scale(param_grads["classifier"]["output"]["kernel"], fc_grad)

    expected = _torch_statistics(torch_model)
    actual = _flax_statistics(batch_stats)
    assert set(actual) == set(expected) and len(expected) == 20
    for name, (mean, var) in expected.items():
        np.testing.assert_allclose(actual[name][0], mean, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(actual[name][1], var, rtol=1e-4, atol=1e-5, err_msg=name)
    images = _images(32, seed=20)
    with torch.no_grad():
        expected_logits = torch_model.eval()(torch.from_numpy(images).double()).numpy()
    variables = {"params": params, "batch_stats": batch_stats}
    actual_logits = jax.jit(model.apply)(variables, _nhwc(images))
    _assert_close_to_scale(actual_logits, expected_logits)


def test_frozen_batchnorm_uses_and_keeps_the_running_statistics():
    """``batchnorm="frozen"`` in train mode is torch's train mode with every BatchNorm in eval:
    the eval-mode function, statistics unchanged, and the BatchNorm scales still get gradients."""
    torch_model = _torch_resnet("resnet18", seed=3)
    variables = torchvision_to_flax(torch_model.state_dict(), "resnet18")
    images = _nhwc(_images(32, batch=3, seed=3))
    frozen = ResNetFeatures("resnet18", batchnorm="frozen")
    features = {k: v["features"] for k, v in variables.items()}
    train = functools.partial(frozen.apply, train=True, mutable=["batch_stats"])
    train_out, updates = jax.jit(train)(features, images)
    eval_out = jax.jit(ResNetFeatures("resnet18").apply)(features, images)
    np.testing.assert_array_equal(train_out, eval_out)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], features["batch_stats"])
    train = functools.partial(ResNetFeatures("resnet18").apply, train=True, mutable=True)
    trained_out, _ = jax.jit(train)(features, images)
    assert np.abs(np.asarray(trained_out) - np.asarray(eval_out)).max() > 1e-2

    def loss(params):
        out, _ = frozen.apply(
            {"params": params, "batch_stats": features["batch_stats"]},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out**2)

    grads = jax.jit(jax.grad(loss))(features["params"])
    assert np.abs(np.asarray(grads["layer1_0"]["bn1"]["scale"])).max() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_convolutions_equal_xlas_1x1_convolution(stride):
    """ResNet's 1x1 convolutions are matrix products over [pixels, channels]: the same values
    and the same input and filter gradients as a 1x1 convolution (odd sizes: stride 2 keeps
    torch's output size)."""
    from jaxdann.models.resnet import _PointwiseConv

    layer = _PointwiseConv(6, stride, jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 9, 5)), jnp.float32)
    params = layer.init(jax.random.key(0), x)

    def as_product(x, params):
        return jnp.sum(jnp.sin(layer.apply(params, x)))

    def as_convolution(x, params):
        kernel = params["params"]["kernel"]
        y = jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(jnp.sin(y))

    expected = jax.value_and_grad(as_convolution, argnums=(0, 1))(x, params)
    value, grads = jax.value_and_grad(as_product, argnums=(0, 1))(x, params)
    np.testing.assert_allclose(value, expected[0], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected[1]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "constructor,arch", [(ResNet18, "resnet18"), (ResNet34, "resnet34"), (ResNet50, "resnet50")]
)
def test_parameter_and_statistic_counts_match_torchvision(constructor, arch):
    torch_model = getattr(torchvision.models, arch)(weights=None)
    torch_params = sum(p.numel() for p in torch_model.parameters())
    torch_stats = sum(b.numel() for n, b in torch_model.named_buffers() if "running" in n)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: constructor().init(jax.random.PRNGKey(0), x), images)
    count = lambda tree: sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))  # noqa: E731
    assert count(variables["params"]) == torch_params
    assert count(variables["batch_stats"]) == torch_stats


def test_random_init_follows_torchvision():
    """Convolutions: He normal over fan-out (std sqrt(2 / (out x k x k))); BatchNorm: 1 and 0."""
    variables = jax.jit(ResNet18().init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    kernel = np.asarray(variables["params"]["features"]["layer3_0"]["conv2"]["kernel"])
    assert kernel.shape == (3, 3, 256, 256)
    assert kernel.std() == pytest.approx(np.sqrt(2 / (256 * 9)), rel=0.02)
    norm = variables["params"]["features"]["bn1"]
    np.testing.assert_array_equal(norm["scale"], np.ones(64))
    np.testing.assert_array_equal(norm["bias"], np.zeros(64))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NHWC"):
        ResNetFeatures("resnet18").init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="train or frozen"):
        ResNetFeatures("resnet18", "eval").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


# -- training --------------------------------------------------------------------------------------

PROGRESS = {"step": 3, "steps_per_epoch": 10, "total_steps": 20, "warmup_steps": 0}


def _training_setup(adaptation="dann", batchnorm="train", pretrained="none"):
    """A ResNet-18 network for 3 classes with a small domain head, its method, its initial
    variables for 32 px images and one batch of 4 source + 4 target uint8 images."""
    config = base_config()
    config.adaptation = adaptation
    config.model.arch, config.model.batchnorm = "resnet18", batchnorm
    config.model.pretrained = pretrained
    config.model.domain_hidden, config.model.domain_init_from_classifier = "16", False
    config.model.dropout_rate = 0.0
    validate(config)
    network, method = build_from_config(config, 3, mean=0.5, std=0.25)
    loaded = read_pretrained(config)
    params, model_state = initial_variables(
        network, method, (32, 32, 3), jax.random.PRNGKey(0), loaded
    )
    rng = np.random.default_rng(0)
    batch = {
        "source_images": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "source_labels": np.array([0, 1, 2, 0], np.int32),
        "source_mask": np.ones(4, np.float32),
        "target_images": rng.integers(0, 128, (4, 32, 32, 3), dtype=np.uint8),
        "target_mask": np.ones(4, np.float32),
    }
    return network, method, params, model_state, batch


def _feature_statistics(network, params, model_state, images):
    """The backbone's running statistics after one train-mode pass over ``images``."""
    run = functools.partial(network.run, part="features", train=True)
    return jax.jit(lambda p, s, x: run(p, s, x=x)[1])(params, model_state, images)


def test_dann_batchnorm_sees_source_and_target_in_one_pass():
    """One DANN loss: the backbone's statistics are those of one pass over the concatenated
    source + target batch (TLlib's ``model(torch.cat((x_s, x_t)))``), not of two passes."""
    network, method, params, model_state, batch = _training_setup()
    rng = jax.random.PRNGKey(5)
    loss = jax.jit(method.loss)
    _, (_, new_state) = loss(params, model_state, batch, rng, PROGRESS)
    source, target, _ = method.prepare(batch, rng)
    together = _feature_statistics(network, params, model_state, jnp.concatenate([source, target]))
    apart = _feature_statistics(
        network, params, _feature_statistics(network, params, model_state, source), target
    )
    actual = new_state["batch_stats"]["features"]
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
        actual,
        together["batch_stats"]["features"],
    )
    first = lambda state: np.asarray(state["batch_stats"]["features"]["bn1"]["mean"])  # noqa: E731
    assert np.abs(first(new_state) - first(model_state)).max() > 1e-3
    assert np.abs(first(new_state) - first(apart)).max() > 1e-3


@pytest.mark.slow  # the module-level frozen test above runs by default
def test_frozen_batchnorm_keeps_the_statistics_while_training():
    network, method, params, model_state, batch = _training_setup(batchnorm="frozen")
    grad_fn = jax.jit(jax.grad(method.loss, has_aux=True))
    grads, (_, new_state) = grad_fn(params, model_state, batch, jax.random.PRNGKey(5), PROGRESS)
    jax.tree.map(np.testing.assert_array_equal, new_state, model_state)
    scale_grad = grads["features"]["layer2_0"]["bn1"]["scale"]
    assert np.abs(np.asarray(scale_grad)).max() > 0


def test_pretrained_resnet_weights_and_statistics_start_a_run(tmp_path):
    torch.manual_seed(0)
    converted = torchvision_to_flax(_torch_resnet("resnet18").state_dict(), "resnet18")
    path = str(tmp_path / "resnet18.msgpack")
    save_params(converted, path)
    _, _, params, model_state, _ = _training_setup(pretrained=path)
    features = {"params": params["features"], "batch_stats": model_state["batch_stats"]["features"]}
    expected = {k: v["features"] for k, v in converted.items()}
    jax.tree.map(np.testing.assert_array_equal, features, expected)
    assert params["classifier"]["output"]["kernel"].shape == (512, 3)  # a fresh 3-way layer
    # AlexNet weights for a ResNet: one sentence naming the differences and the fix.
    alexnet = torchvision_to_flax(torchvision.models.alexnet(weights=None).state_dict())
    save_params(alexnet, path)
    with pytest.raises(ConversionError, match=r"features do not fit model.arch=resnet18 .*--arch"):
        _training_setup(pretrained=path)


def _cli_flags(tmp_path, adaptation, *extra):
    from conftest import tiny_pacs_overrides, write_pacs_tree

    root = tmp_path / "pacs"
    if not root.exists():
        write_pacs_tree(root, per_class=8)  # 16 images a domain: two full batches of 8
    overrides = tiny_pacs_overrides(root, tmp_path / "cache")
    overrides |= {"data.name": "pacs", "model.arch": "resnet18", "method.num_k": "2"}
    overrides |= {"adaptation": adaptation, "model.dropout_rate": "0"}
    return [*(f"--config.{k}={v}" for k, v in overrides.items()), *extra]


@pytest.mark.parametrize("adaptation", ["dann", pytest.param("mcd", marks=pytest.mark.slow)])
def test_resnet18_trains_with_the_method(tmp_path, adaptation):
    """Two steps through the command line; the checkpoint holds the backbone's statistics."""
    workdir = tmp_path / "run"
    flags = _cli_flags(tmp_path, adaptation, "--config.epochs=1")
    assert train.main(["--workdir", str(workdir), *flags]) == 0
    with open(workdir / "metrics.jsonl") as handle:
        (row,) = [json.loads(line) for line in handle]
    assert all(np.isfinite(row[key]) for key in METHODS.get(adaptation).epoch_metrics)
    (checkpoint,) = (workdir / "checkpoints").iterdir()
    metadata = (checkpoint / "default" / "_METADATA").read_text()
    assert '"batch_stats"' in metadata and '"layer4_1"' in metadata


@pytest.mark.slow
def test_resnet18_dann_resumes_bit_for_bit(tmp_path, train_whole_and_resumed):
    whole, parts = train_whole_and_resumed(tmp_path, _cli_flags(tmp_path, "dann"))
    assert parts == whole and len(whole) == 2


def test_batchnorm_statistics_are_the_global_batchs_on_four_devices():
    """The DANN loss jitted over a 4-device mesh (each device holding 1 source + 1 target row
    of 4 + 4) gives the one-device statistics and gradients: BatchNorm sums over the global
    batch."""
    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (set in conftest)")
    from jaxdann.training import parallel

    network, method, params, model_state, batch = _training_setup()
    rng = jax.random.PRNGKey(5)
    grad_fn = jax.jit(jax.grad(method.loss, has_aux=True))
    grads_one, (_, one) = grad_fn(params, model_state, batch, rng, PROGRESS)
    mesh = parallel.make_mesh(4)
    sharded = jax.device_put(batch, parallel.batch_sharded(mesh))
    replicated = jax.device_put((params, model_state), parallel.replicated(mesh))
    grads_four, (_, four) = grad_fn(*replicated, sharded, rng, PROGRESS)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), four, one)
    jax.tree.map(_assert_close_to_scale, grads_four, grads_one)
    # One device's rows alone would give other statistics.
    source, target, _ = method.prepare(batch, rng)
    local = _feature_statistics(
        network, params, model_state, jnp.concatenate([source[:1], target[:1]])
    )
    first = lambda state: np.asarray(state["batch_stats"]["features"]["bn1"]["mean"])  # noqa: E731
    assert np.abs(first(local) - first(four)).max() > 1e-3


@pytest.mark.slow
def test_resnet18_dann_on_one_and_four_devices(tmp_path):
    """Through the command line: one epoch (2 steps) on one device and on four (2 rows each)
    gives the same metrics to 1e-3. The gradients agree to 1e-5 of their scale (the test above);
    one SGD step at lr 0.01 from random init takes that to 4e-4 in the second step's losses.
    Statistics of each device's 2 rows would change the losses by far more."""
    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (set in conftest)")
    rows = {}
    for devices in (1, 4):
        workdir = tmp_path / str(devices)
        flags = _cli_flags(tmp_path, "dann", "--config.epochs=1")
        flags.append(f"--config.parallel.num_devices={devices}")
        assert train.main(["--workdir", str(workdir), *flags]) == 0
        with open(workdir / "metrics.jsonl") as handle:
            rows[devices] = [json.loads(line) for line in handle]
    keys = (*METHODS.get("dann").epoch_metrics, "target_accuracy")
    for one, four in zip(rows[1], rows[4], strict=True):
        for key in keys:
            assert one[key] == pytest.approx(four[key], rel=1e-3, abs=1e-5), key


@pytest.mark.parametrize(
    "name,source_images", [("office31_dann_resnet50", 2817), ("pacs_dann_resnet50", 1670)]
)
def test_the_resnet50_configs_hold_tllibs_recipe_for_about_20000_steps(name, source_images):
    from jaxdann import config as config_lib

    config = config_lib.load_config(f"configs/{name}.py")
    config_lib.validate(config)
    assert (config.model.arch, config.model.bottleneck, config.batch_size) == ("resnet50", 256, 32)
    assert config.optimizer.backbone_lr_multiplier == 0.1 and config.data.drop_last
    steps = config.epochs * (source_images // config.batch_size)
    assert 19_900 <= steps <= 20_100
    assert config.grl.gamma == pytest.approx(steps / 1000, rel=0.01)

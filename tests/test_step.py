"""The fused step is the seed's procedure: three passes' gradients and torch's parameter update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdann.config import base_config
from jaxdann.data.transforms import augment, normalize
from jaxdann.models.grl import grl_coefficient, reverse_gradient
from jaxdann.training.model_setup import build_from_config
from jaxdann.training.optim import learning_rate_schedule, make_optimizer
from jaxdann.training.step import TrainState, make_course, make_train_step

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _config(coefficient=0.1, schedule="constant", *, arch="small_cnn", adaptation="dann"):
    """The seed's DANN (the domain classifier shaped like the label classifier), no dropout."""
    config = base_config()
    config.adaptation = adaptation
    config.model.arch = arch
    config.model.pretrained = "none"
    config.model.dropout_rate = 0.0
    config.model.domain_hidden = "classifier"
    config.grl.coefficient = coefficient
    config.grl.schedule = schedule
    return config


def _build(config):
    """``(network, method)``: 7 classes, the ImageNet normalisation."""
    return build_from_config(config, 7, mean=MEAN, std=STD)


def _batch(size, batch=4, seed=0):
    rng = np.random.default_rng(seed)

    def images():
        return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

    return {
        "source_images": images(),
        "source_labels": rng.integers(0, 7, batch).astype(np.int32),
        "source_mask": np.ones(batch, np.float32),
        "target_images": images(),
        "target_mask": np.ones(batch, np.float32),
    }


def _init(network, method, size, seed=0):
    """Every part randomly initialised on its own (no copy of the classifier into the domain
    classifier: the gradients of independent heads are the stronger check)."""
    image_shape = (size, size, 3)
    rng = jax.random.PRNGKey(seed)
    return network.init(rng, image_shape, type(method).head_inputs)["params"]


def _step_fn(method, optimizer, learning_rate=1.0):
    step = make_train_step(
        method,
        lambda lr, course: optimizer,
        lambda lr, course: lambda step: learning_rate,
    )
    course = make_course(steps_per_epoch=1, total_steps=10)
    return jax.jit(lambda state, batch, rng: step(state, batch, rng, course))


def _state(method, params, optimizer, learning_rate=1.0):
    opt_state = method.init_optimizer(optimizer, params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, learning_rate)


def _one_step(method, params, batch, optimizer):
    state = _state(method, params, optimizer)
    return _step_fn(method, optimizer)(state, batch, jax.random.PRNGKey(0))


def _assert_trees_close(actual, expected, relative):
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(actual),
        jax.tree_util.tree_leaves(expected),
        strict=True,
    ):
        scale = float(jnp.abs(want).max()) + 1e-12
        np.testing.assert_allclose(
            got, want, rtol=0, atol=relative * scale, err_msg=jax.tree_util.keystr(path)
        )


def _apply(network, params, part, x):
    """One part in evaluation mode (the same as train mode without dropout or BatchNorm)."""
    return network.module.apply({"params": params}, part, x, train=False)


# AlexNet with -m slow: its fused step is compared with torch's by default (two steps, below).
@pytest.mark.parametrize(
    "arch,size", [("small_cnn", 28), pytest.param("alexnet", 63, marks=pytest.mark.slow)]
)
def test_fused_gradients_equal_the_three_separate_passes(arch, size):
    network, method = _build(_config(0.3, arch=arch))
    params = _init(network, method, size)
    batch = _batch(size)
    # Plain SGD with lr 1: the update is exactly minus the gradient.
    new_state, metrics = _one_step(method, params, batch, optax.sgd(1.0))
    fused = jax.tree.map(lambda old, new: old - new, params, new_state.params)

    source = normalize(batch["source_images"], MEAN, STD)
    target = normalize(batch["target_images"], MEAN, STD)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels

    def class_pass(p):
        logits = network.logits(p, {}, source)
        return cross_entropy(logits, batch["source_labels"]).mean()

    def domain_pass(p, images, label):
        features = _apply(network, p, "features", images)
        logits = _apply(network, p, "domain_classifier", reverse_gradient(features, 0.3))
        return cross_entropy(logits, jnp.full(images.shape[0], label)).mean()

    domain_grad = jax.jit(jax.grad(domain_pass), static_argnums=2)  # one compilation, not op by op
    separate = jax.tree.map(
        lambda a, b, c: a + b + c,
        jax.jit(jax.grad(class_pass))(params),
        domain_grad(params, source, 0),
        domain_grad(params, target, 1),
    )
    _assert_trees_close(fused, separate, 1e-4)
    assert float(jnp.abs(fused["domain_classifier"]["output"]["kernel"]).max()) > 0
    assert float(metrics["grl_coefficient"]) == pytest.approx(0.3)


def test_inverted_labels_train_features_on_swapped_domains_and_the_head_on_true_ones():
    config = _config(0.3)
    config.grl.objective = "inverted_labels"
    network, method = _build(config)
    params = _init(network, method, 28)
    batch = _batch(28)
    new_state, _ = _one_step(method, params, batch, optax.sgd(1.0))
    fused = jax.tree.map(lambda old, new: old - new, params, new_state.params)

    images = jnp.concatenate(
        [normalize(batch["source_images"], MEAN, STD), normalize(batch["target_images"], MEAN, STD)]
    )
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels
    domains = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])

    def domain_loss(p, labels):
        features = _apply(network, p, "features", images)
        logits = _apply(network, p, "domain_classifier", features)
        per_row = cross_entropy(logits, labels)
        return per_row[:4].mean() + per_row[4:].mean()

    def class_loss(p):
        logits = network.logits(p, {}, normalize(batch["source_images"], MEAN, STD))
        return cross_entropy(logits, batch["source_labels"]).mean()

    domain_grad = jax.jit(jax.grad(domain_loss))  # one compilation, not op by op
    true_grads = domain_grad(params, domains)
    swapped_grads = domain_grad(params, 1 - domains)
    class_grads = jax.jit(jax.grad(class_loss))(params)
    # The domain head learns the true domains only; the features learn the class loss plus 0.3 x
    # the swapped-domain loss (never the true-domain loss, which is what reversal would use).
    _assert_trees_close(fused["domain_classifier"], true_grads["domain_classifier"], 1e-4)
    expected_features = jax.tree.map(
        lambda c, s: c + 0.3 * s, class_grads["features"], swapped_grads["features"]
    )
    _assert_trees_close(fused["features"], expected_features, 1e-4)
    _assert_trees_close(fused["classifier"], class_grads["classifier"], 1e-4)


def test_source_only_step_has_no_domain_branch():
    network, method = _build(_config(adaptation="none"))
    params = _init(network, method, 28)
    assert set(params) == {"features", "classifier"}
    batch = {k: v for k, v in _batch(28).items() if not k.startswith("target")}
    state, metrics = _one_step(method, params, batch, optax.sgd(0.1))
    assert "domain_loss_source" not in metrics
    assert set(state.params) == {"features", "classifier"}


def test_padded_rows_change_nothing():
    network, method = _build(_config())
    params = _init(network, method, 28)
    full = _batch(28, batch=3)
    padded = {k: np.concatenate([v, np.zeros_like(v[:2])]) for k, v in full.items()}
    padded["source_images"][3:] = 255  # garbage in the padded rows
    padded["target_images"][3:] = 7
    state_full, full_metrics = _one_step(method, params, full, optax.sgd(0.1))
    state_padded, padded_metrics = _one_step(method, params, padded, optax.sgd(0.1))
    for key in ("class_loss", "domain_loss_source", "domain_loss_target", "source_count"):
        np.testing.assert_allclose(padded_metrics[key], full_metrics[key], rtol=1e-5)
    _assert_trees_close(state_padded.params, state_full.params, 1e-5)


def test_one_compiled_step_serves_runs_of_different_lengths():
    # jaxdann.pairs trains source domains of different sizes: their steps per epoch and total
    # steps reach the step as its traced ``course``, so the step is traced (and compiled) once,
    # and the schedules inside it still follow each run's length.
    network, method = _build(_config(1.0, "dann"))
    params = _init(network, method, 28)

    def optimizer_for(lr, course):
        return make_optimizer(
            "sgd", lr, step_size=1, gamma=0.1, steps_per_epoch=course["steps_per_epoch"]
        )

    def schedule_for(lr, course):
        return learning_rate_schedule(
            lr, step_size=1, gamma=0.1, steps_per_epoch=course["steps_per_epoch"]
        )

    traces = []
    train_step = make_train_step(method, optimizer_for, schedule_for)
    step = jax.jit(lambda *args: traces.append(1) or train_step(*args))
    batch = _batch(28)
    metrics = {}
    for steps_per_epoch, total_steps in ((2, 4), (3, 30)):
        course = make_course(steps_per_epoch, total_steps)
        state = _state(method, params, optimizer_for(0.5, course), 0.5).replace(step=jnp.int32(2))
        _, metrics[total_steps] = step(state, batch, jax.random.PRNGKey(0), course)
    assert len(traces) == 1
    # Step 2 is the first of epoch 2 with 2 steps an epoch (decayed once), still epoch 1 with 3.
    assert float(metrics[4]["learning_rate"]) == pytest.approx(0.05)
    assert float(metrics[30]["learning_rate"]) == pytest.approx(0.5)
    for total_steps in (4, 30):
        expected = 2 / (1 + np.exp(-10 * 2 / total_steps)) - 1
        assert float(metrics[total_steps]["grl_coefficient"]) == pytest.approx(expected, rel=1e-5)


def test_schedule_is_computed_inside_the_step():
    def coefficient(step):
        return grl_coefficient(step, schedule="dann", maximum=0.5, gamma=10.0, total_steps=100)

    steps = jnp.arange(0, 101, 25)
    values = jax.jit(jax.vmap(coefficient))(steps)
    expected = 0.5 * (2 / (1 + np.exp(-10 * np.asarray(steps) / 100)) - 1)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
    constant = grl_coefficient(
        jnp.int32(7), schedule="constant", maximum=0.1, gamma=10.0, total_steps=9
    )
    assert float(constant) == pytest.approx(0.1)

    # A warm-up of 20 steps: 0 until step 20, then the ramp over the remaining 80 steps.
    def warm(step, schedule="dann"):
        return grl_coefficient(
            step, schedule=schedule, maximum=0.5, gamma=10.0, total_steps=100, warmup_steps=20
        )

    steps = jnp.asarray([0, 19, 20, 60, 100])
    values = jax.jit(jax.vmap(warm))(steps)
    progress = np.clip((np.asarray(steps) - 20) / 80, 0, 1)
    expected = np.where(np.asarray(steps) < 20, 0.0, 0.5 * (2 / (1 + np.exp(-10 * progress)) - 1))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
    assert float(warm(jnp.int32(19), "constant")) == 0.0
    assert float(warm(jnp.int32(20), "constant")) == pytest.approx(0.5)


def _torch_seed_dann(torch, torchvision):
    """The seed's model: AlexNet (7 classes) + a domain classifier initialised from it."""
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None, num_classes=7, dropout=0.0)
    domain = torchvision.models.alexnet(weights=None, num_classes=2, dropout=0.0).classifier
    for i in (1, 4):
        domain[i].weight.data = net.classifier[i].weight.data.clone()
        domain[i].bias.data = net.classifier[i].bias.data.clone()
    return net, domain


def _convert_dann(net, domain):
    from jaxdann.convert import torchvision_to_flax

    state_dict = net.state_dict()
    params = torchvision_to_flax(state_dict)
    features = {k: v for k, v in state_dict.items() if k.startswith("features")}
    as_classifier = {f"classifier.{k}": v for k, v in domain.state_dict().items()}
    params["domain_classifier"] = torchvision_to_flax({**features, **as_classifier})["classifier"]
    return params


def test_two_steps_move_parameters_like_the_seeds_pytorch_step():
    """The seed: three forward/backward passes through a torch DANN AlexNet, then SGD.step()."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")

    class ReverseLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.alpha = alpha
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return grad.neg() * ctx.alpha, None

    net, domain = _torch_seed_dann(torch, torchvision)
    params = _convert_dann(net, domain)
    alpha, size, lr, batch_size = 0.1, 63, 1e-3, 3
    batch = _batch(size, batch=batch_size, seed=1)
    _, method = _build(_config(alpha, arch="alexnet"))
    optimizer = make_optimizer("sgd", lr, momentum=0.9, weight_decay=5e-5, steps_per_epoch=1)
    step = _step_fn(method, optimizer, learning_rate=lr)
    state = _state(method, params, optimizer, lr)

    torch_params = list(net.parameters()) + list(domain.parameters())
    torch_optimizer = torch.optim.SGD(torch_params, lr=lr, momentum=0.9, weight_decay=5e-5)

    def to_torch(images):
        return torch.from_numpy(np.array(normalize(images, MEAN, STD)).transpose(0, 3, 1, 2))

    source, target = to_torch(batch["source_images"]), to_torch(batch["target_images"])
    labels = torch.from_numpy(batch["source_labels"]).long()
    loss = torch.nn.CrossEntropyLoss()

    def features(x):
        return torch.flatten(net.avgpool(net.features(x)), 1)

    zeros, ones = torch.zeros(batch_size).long(), torch.ones(batch_size).long()
    for _ in range(2):  # two steps, so the momentum buffers matter too
        state, _ = step(state, batch, jax.random.PRNGKey(0))
        torch_optimizer.zero_grad()
        loss(net(source), labels).backward()
        loss(domain(ReverseLayer.apply(features(source), alpha)), zeros).backward()
        loss(domain(ReverseLayer.apply(features(target), alpha)), ones).backward()
        torch_optimizer.step()

    expected = _convert_dann(net, domain)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), params, expected)
    assert max(jax.tree.leaves(moved)) > 1e-4  # the steps did move the weights
    _assert_trees_close(state.params, expected, 1e-5)


def test_augment_flips_and_crops_without_inventing_pixels():
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 12, 3)).astype(np.uint8)
    flipped = np.asarray(augment(jnp.asarray(images), jax.random.PRNGKey(0), flip=True, crop=False))
    mirrored = [
        np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped, images, strict=True)
    ]
    kept = [np.array_equal(out, image) for out, image in zip(flipped, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)

    cropped = np.asarray(augment(jnp.asarray(images), jax.random.PRNGKey(1), flip=False, crop=True))
    pad = 2  # 1/8 of the height, on both axes
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = []
    for out, source in zip(cropped, padded, strict=True):
        found = [
            (a, b)
            for a in range(2 * pad + 1)
            for b in range(2 * pad + 1)
            if np.array_equal(out, source[a : a + 16, b : b + 12])
        ]
        assert found, "a crop that is no window of the reflect-padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # random offsets, not one fixed window


def test_domain_loss_weight_scales_both_domain_losses():
    network, method = _build(_config(0.3))
    params, batch = _init(network, method, 28), _batch(28)
    losses = {}
    for weight in (0.0, 2.5):
        config = _config(0.3)
        config.domain_loss_weight = weight
        _, weighted = _build(config)
        _, metrics = _one_step(weighted, params, batch, optax.sgd(0.0))
        count = float(metrics["source_count"])
        domain = (metrics["domain_loss_source"] + metrics["domain_loss_target"]) / count
        losses[weight] = (float(metrics["loss"]), float(metrics["class_loss"]) / count, domain)
    # Weight 0: the class loss alone; weight 2.5: plus 2.5 times the two domain means.
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], rel=1e-6)
    loss, class_loss, domain = losses[2.5]
    assert loss == pytest.approx(class_loss + 2.5 * float(domain), rel=1e-5)
    assert float(domain) > 0.1

"""jaxdann.losses against PyTorch references written out from the papers and TLlib's definitions.

Each reference runs in float64 torch on the same small random arrays; the JAX functions run in
float32. Values and gradients (with respect to every differentiable input) must agree.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdann import losses

ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)
RTOL, ATOL = 2e-4, 1e-5


def _arrays(seed, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(shape)).astype(np.float32) for shape in shapes]


def _torch(*arrays):
    return [torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True) for a in arrays]


def _check(jax_fn, torch_fn, arrays, rtol=RTOL, atol=ATOL):
    """The value and the gradient with respect to every argument agree (torch leaves no
    gradient on an input that only an argmax reads: zero)."""
    value_and_grad = jax.jit(jax.value_and_grad(jax_fn, argnums=tuple(range(len(arrays)))))
    value, grads = value_and_grad(*arrays)
    tensors = _torch(*arrays)
    expected = torch_fn(*tensors)
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=rtol, atol=atol)
    for grad, tensor in zip(grads, tensors, strict=True):
        expected_grad = np.zeros(tensor.shape) if tensor.grad is None else tensor.grad.numpy()
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol)


# -- the references ----------------------------------------------------------------------------


def _gaussians(x, alphas=None, sigma=None):
    """TLlib's GaussianKernel(s): pairwise squared distances, bandwidth alpha x their mean
    (detached), or a fixed sigma; summed over the alphas."""
    distances = ((x.unsqueeze(0) - x.unsqueeze(1)) ** 2).sum(2)
    if sigma is not None:
        return torch.exp(-distances / (2 * sigma**2))
    mean = distances.detach().mean()
    return sum(torch.exp(-distances / (2 * alpha * mean)) for alpha in alphas)


def _index_matrix(n, linear):
    """TLlib's index matrix over [source; target] rows (n each), rebuilt from its definition."""
    index = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    if linear:
        for i in range(n):
            s1, s2 = i, (i + 1) % n
            index[s1, s2] = index[s1 + n, s2 + n] = 1.0 / n
            index[s1, s2 + n] = index[s2, s1 + n] = -1.0 / n
        return index
    for i, j in itertools.product(range(n), range(n)):
        if i != j:
            index[i, j] = index[i + n, j + n] = 1.0 / (n * (n - 1))
        index[i, j + n] = index[i + n, j] = -1.0 / (n * n)
    return index


def _torch_mmd(kernel, n, linear):
    return (kernel * _index_matrix(n, linear)).sum() + 2.0 / (n - 1)


def _torch_entropy(p):
    return -(p * torch.log(p + 1e-5)).sum(1)


# -- MMD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("linear", [False, True])
def test_mk_mmd_matches_tllibs_multi_kernel_mmd(linear):
    source, target = _arrays(0, (6, 5), (6, 5))
    target = target + 0.5

    def reference(s, t):
        return _torch_mmd(_gaussians(torch.cat([s, t]), ALPHAS), 6, linear)

    _check(lambda s, t: losses.mk_mmd(s, t, linear=linear), reference, [source, target])


@pytest.mark.parametrize("linear", [False, True])
def test_jmmd_matches_tllibs_joint_mmd_over_features_and_softmax(linear):
    fs, ft, ys, yt = _arrays(1, (6, 5), (6, 5), (6, 3), (6, 3))

    def reference(fs, ft, ys, yt):
        kernel = _gaussians(torch.cat([fs, ft]), ALPHAS)
        kernel = kernel * _gaussians(torch.cat([F.softmax(ys, 1), F.softmax(yt, 1)]), sigma=0.92)
        return _torch_mmd(kernel, 6, linear)

    def jax_fn(fs, ft, ys, yt):
        sources = [fs, jax.nn.softmax(ys)]
        return losses.jmmd(sources, [ft, jax.nn.softmax(yt)], linear=linear)

    _check(jax_fn, reference, [fs, ft, ys, yt])


@pytest.mark.parametrize("linear", [False, True])
def test_mmd_leaves_padding_rows_out(linear):
    source, target, junk = _arrays(2, (8, 4), (8, 4), (2, 4), scale=1.0)
    mask = jnp.array([1.0] * 6 + [0.0] * 2)
    padded_source = jnp.concatenate([source[:6], 50 * junk])
    padded_target = jnp.concatenate([target[:6], -50 * junk])

    def padded(s, t):
        return losses.mk_mmd(s, t, linear=linear, source_mask=mask, target_mask=mask)

    value, (grad_s, grad_t) = jax.jit(jax.value_and_grad(padded, argnums=(0, 1)))(
        padded_source, padded_target
    )
    ones = jnp.ones(8)
    mmd = jax.jit(losses.mk_mmd, static_argnames="linear")
    full = mmd(source, target, linear=linear, source_mask=ones, target_mask=ones)
    np.testing.assert_allclose(full, mmd(source, target, linear=linear), rtol=1e-6)
    assert np.all(np.asarray(grad_s[6:]) == 0) and np.all(np.asarray(grad_t[6:]) == 0)
    if not linear:  # the cyclic pairs of the linear estimate lose the wrap-around pair
        real_value, real = jax.jit(jax.value_and_grad(losses.mk_mmd, argnums=(0, 1)))(
            source[:6], target[:6]
        )
        np.testing.assert_allclose(value, real_value, rtol=1e-5)
        np.testing.assert_allclose(grad_s[:6], real[0], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(grad_t[:6], real[1], rtol=1e-4, atol=1e-7)


def test_mmd_of_one_distribution_is_small_and_of_shifted_ones_large():
    source, target = _arrays(3, (32, 4), (32, 4))
    assert abs(float(losses.mk_mmd(source, target))) < 0.5
    assert float(losses.mk_mmd(source, target + 3.0)) > 1.5


# -- CDAN's maps and entropy weights -----------------------------------------------------------


def test_multilinear_map_is_the_class_major_outer_product():
    features, logits, cotangent = _arrays(4, (3, 5), (3, 4), (3, 20))
    probabilities = np.asarray(jax.nn.softmax(logits))

    def reference(f, g):
        return (torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).view(3, -1) * cotangent_t).sum()

    cotangent_t = torch.tensor(cotangent, dtype=torch.float64)
    _check(
        lambda f, g: jnp.sum(losses.multilinear_map(f, g) * cotangent),
        reference,
        [features, probabilities],
    )
    mapped = losses.multilinear_map(features, probabilities)
    np.testing.assert_allclose(mapped[1, 2 * 5 + 3], probabilities[1, 2] * features[1, 3])


def test_randomized_multilinear_map_matches_tllibs():
    features, logits, cotangent = _arrays(5, (3, 6), (3, 4), (3, 16))
    probabilities = np.asarray(jax.nn.softmax(logits))
    rf, rg = losses.randomized_map_matrices(jax.random.key(0), 6, 4, 16)
    assert rf.shape == (6, 16) and rg.shape == (4, 16)
    rf_t, rg_t = (torch.tensor(np.asarray(m), dtype=torch.float64) for m in (rf, rg))
    cotangent_t = torch.tensor(cotangent, dtype=torch.float64)

    def reference(f, g):
        mapped = torch.mul(torch.mm(f, rf_t), torch.mm(g, rg_t)) / np.sqrt(16.0)
        return (mapped * cotangent_t).sum()

    def jax_fn(f, g):
        return jnp.sum(losses.randomized_multilinear_map(f, g, rf, rg) * cotangent)

    _check(jax_fn, reference, [features, probabilities])


def test_entropy_weights_match_tllib_and_carry_no_gradient():
    (logits,) = _arrays(6, (5, 4), scale=2.0)
    probabilities = np.asarray(jax.nn.softmax(logits))
    p = torch.tensor(probabilities, dtype=torch.float64)
    weight = 1.0 + torch.exp(-_torch_entropy(p))
    expected = (weight / weight.sum() * 5).numpy()
    np.testing.assert_allclose(losses.entropy_weights(probabilities), expected, rtol=1e-5)
    grad = jax.grad(lambda q: jnp.sum(losses.entropy_weights(q) * jnp.arange(5.0)))(probabilities)
    assert np.all(np.asarray(grad) == 0)
    mask = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
    masked = losses.entropy_weights(probabilities, mask=mask)
    np.testing.assert_allclose(masked[:3], losses.entropy_weights(probabilities[:3]), rtol=1e-6)
    assert np.all(np.asarray(masked[3:]) == 0)


# -- MCC, MDD, MCD, AFN ------------------------------------------------------------------------


def test_mcc_matches_tllibs_minimum_class_confusion():
    (logits,) = _arrays(7, (8, 4), scale=2.0)

    def reference(y):
        p = F.softmax(y / 2.5, dim=1)
        w = 1 + torch.exp(-_torch_entropy(p).detach())
        w = (8 * w / w.sum()).unsqueeze(1)
        confusion = torch.mm((p * w).transpose(1, 0), p)
        confusion = confusion / torch.sum(confusion, dim=1)
        return (confusion.sum() - torch.trace(confusion)) / 4

    _check(lambda y: losses.mcc(y), reference, [logits])
    mask = jnp.array([1.0] * 6 + [0.0] * 2)
    padded = jnp.concatenate([logits[:6], 9.0 * logits[6:]])
    mcc = jax.jit(losses.mcc)
    np.testing.assert_allclose(mcc(padded, mask=mask), mcc(logits[:6]), rtol=1e-5)


def test_mdd_matches_tllibs_margin_disparity_discrepancy():
    arrays = _arrays(8, (6, 4), (6, 4), (6, 4), (6, 4), scale=2.0)

    def reference(ys, ys_adv, yt, yt_adv):
        source = F.cross_entropy(ys_adv, ys.argmax(1), reduction="none")
        shifted = torch.log(torch.clamp(1.0 - F.softmax(yt_adv, dim=1) + 1e-6, max=1.0))
        target = -F.nll_loss(shifted, yt.argmax(1), reduction="none")
        return (-4.0 * source + target).mean()

    _check(lambda *a: losses.mdd(*a, margin=4.0), reference, arrays)
    mask = jnp.ones(6)
    masked = losses.mdd(*arrays, source_mask=mask, target_mask=mask)
    np.testing.assert_allclose(masked, losses.mdd(*arrays), rtol=1e-6)


def test_classifier_discrepancy_is_the_mean_absolute_difference():
    a, b = (np.asarray(jax.nn.softmax(x)) for x in _arrays(9, (5, 3), (5, 3)))
    _check(losses.classifier_discrepancy, lambda p, q: torch.mean(torch.abs(p - q)), [a, b])


def test_afn_norm_loss_matches_tllibs_stepwise_feature_norm():
    (features,) = _arrays(10, (5, 7))

    def reference(f):
        radius = f.norm(p=2, dim=1).detach() + 1.5
        return ((f.norm(p=2, dim=1) - radius) ** 2).mean()

    _check(lambda f: losses.afn_norm_loss(f, delta=1.5), reference, [features])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0])
    grad = jax.grad(lambda f: losses.afn_norm_loss(f, mask=mask))(jnp.asarray(features))
    assert np.all(np.asarray(grad[3:]) == 0) and np.all(np.isfinite(grad))
    assert np.all(np.isfinite(jax.grad(losses.afn_norm_loss)(jnp.zeros((2, 3)))))

"""Domain-adaptation losses as pure functions, batch-first, for users who build their own steps.

Every function takes arrays whose first axis is the batch and returns a scalar (or, for the
maps, an array). They follow the papers and TLlib (thuml/Transfer-Learning-Library), whose
definitions the tests re-derive in PyTorch; where a function differs from TLlib its docstring
says so.

Masks. Where a function takes ``mask`` (or ``source_mask``/``target_mask``), it is a ``[batch]``
array of 0/1 weights, 0 on the padding rows a fixed-shape batch carries; a padding row then
changes neither the value nor any gradient, and means divide by the number of real rows.
``None`` means every row is real. With all-ones masks the value is exactly the unmasked one.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "DEFAULT_KERNEL_ALPHAS",
    "RANDOMIZE_ABOVE",
    "afn_norm_loss",
    "classifier_discrepancy",
    "entropy",
    "entropy_weights",
    "jmmd",
    "mcc",
    "mdd",
    "mk_mmd",
    "multilinear_map",
    "randomized_map_matrices",
    "randomized_multilinear_map",
]

#: The bandwidth factors of DAN's and JAN's Gaussian kernels: 2^-3 .. 2^1 (TLlib's examples).
DEFAULT_KERNEL_ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)
#: CDAN uses the randomized multilinear map when features x classes exceeds this (Long et al.
#: 2018, Sec. 3.2; TLlib's examples use it only when asked, with ``--randomized``).
RANDOMIZE_ABOVE = 4096


def _weights(mask: jax.Array | None, rows: int) -> jax.Array:
    """The 0/1 row weights as float32 (all ones for ``mask=None``)."""
    if mask is None:
        return jnp.ones((rows,), jnp.float32)
    return jnp.asarray(mask, jnp.float32).reshape(rows)


def _mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The mean of the per-row ``values`` over the real rows (``jaxdann.methods.masked_mean``;
    restated here so this module imports nothing from the method package)."""
    weights = _weights(mask, values.shape[0])
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# -- MDD, MCD, AFN ---------------------------------------------------------------------------


def mdd(
    source_logits: jax.Array,
    source_adv_logits: jax.Array,
    target_logits: jax.Array,
    target_adv_logits: jax.Array,
    *,
    margin: float = 4.0,
    source_mask: jax.Array | None = None,
    target_mask: jax.Array | None = None,
) -> jax.Array:
    """The margin disparity discrepancy (Zhang et al. 2019, "Bridging Theory and Algorithm for
    Domain Adaptation"), TLlib's ``ClassificationMarginDisparityDiscrepancy``.

    With ``h`` the main classifier's prediction (argmax of its logits, a pseudo-label that
    carries no gradient) and ``p_adv`` the adversarial head's softmax::

        D = -margin * mean_s CE(adv logits, h)  +  mean_t log(1 - p_adv[h] + 1e-6, clipped at 0)

    (the ``1e-6`` shift and the clip at ``log 1 = 0`` are TLlib's ``shift_log``).

    Sign convention: this returns D, the value the *features* minimise; the adversarial head
    maximises it. In a step, put the adversarial head's input through the gradient reversal
    layer and add ``-trade_off * mdd(...)`` to the loss (TLlib's ``transfer_loss = -mdd(...)``):
    the head then descends ``-D`` (ascends D) and the reversed gradient makes the features
    descend D.

    Differs from TLlib: TLlib means ``-margin * L_s + L_t`` over rows paired one to one (equal
    batch sizes); here the source and the target terms are each a mean over their own real
    rows (the same number when the batches are equal and unpadded).
    """
    source_labels = jnp.argmax(source_logits, axis=-1)
    target_labels = jnp.argmax(target_logits, axis=-1)
    source_log_probs = jax.nn.log_softmax(source_adv_logits.astype(jnp.float32), axis=-1)
    source_ce = -jnp.take_along_axis(source_log_probs, source_labels[:, None], axis=-1)[:, 0]
    target_probs = jax.nn.softmax(target_adv_logits.astype(jnp.float32), axis=-1)
    agreed = jnp.take_along_axis(target_probs, target_labels[:, None], axis=-1)[:, 0]
    target_term = jnp.log(jnp.minimum(1.0 - agreed + 1e-6, 1.0))
    return -margin * _mean(source_ce, source_mask) + _mean(target_term, target_mask)


def classifier_discrepancy(
    p1: jax.Array, p2: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
    """MCD's classifier discrepancy (Saito et al. 2018): the mean absolute difference of two
    ``[batch, classes]`` probability arrays, TLlib's ``classifier_discrepancy`` (a mean over
    rows and classes). With ``mask``, the mean is over the real rows only."""
    per_row = jnp.mean(jnp.abs(p1.astype(jnp.float32) - p2.astype(jnp.float32)), axis=-1)
    return _mean(per_row, mask)


def _row_norm(features: jax.Array) -> jax.Array:
    """The L2 norm of each row, with a zero (not NaN) gradient at a zero row, as torch's."""
    squares = jnp.sum(jnp.square(features.astype(jnp.float32)), axis=-1)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def afn_norm_loss(
    features: jax.Array, *, delta: float = 1.0, mask: jax.Array | None = None
) -> jax.Array:
    """The stepwise adaptive feature norm loss (Xu et al. 2019, "Larger Norm More
    Transferable"), TLlib's ``AdaptiveFeatureNorm``: ``mean((stop_gradient(||f||) + delta -
    ||f||)^2)`` over rows, which pushes every row's norm up by ``delta`` per step (its value
    is ``delta**2`` for any non-empty batch; only its gradient, ``-2 delta f/||f||`` per row
    over the row count, matters). TLlib applies it to source and target separately and adds
    the two. With ``mask``, the mean is over the real rows only."""
    norms = _row_norm(features)
    radius = jax.lax.stop_gradient(norms) + delta
    return _mean(jnp.square(norms - radius), mask)


# -- entropy, CDAN's maps, MCC ---------------------------------------------------------------


def entropy(probabilities: jax.Array) -> jax.Array:
    """Per-row entropy ``-sum p log(p + 1e-5)`` (TLlib's ``entropy``; the 1e-5 keeps the log
    finite at p = 0)."""
    p = probabilities.astype(jnp.float32)
    return -jnp.sum(p * jnp.log(p + 1e-5), axis=-1)


def entropy_weights(probabilities: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """CDAN+E's and MCC's per-row weights ``1 + exp(-H(p))``, normalised to sum to the number
    of (real) rows, so confident rows count more and the weighted mean keeps its scale.

    The weights carry no gradient (``stop_gradient``): TLlib detaches them in both places
    (CDAN softmaxes detached logits, MCC detaches the entropy). Padding rows get weight 0.
    """
    weights = _weights(mask, probabilities.shape[0])
    raw = (1.0 + jnp.exp(-entropy(jax.lax.stop_gradient(probabilities)))) * weights
    return raw * (jnp.sum(weights) / jnp.maximum(jnp.sum(raw), 1e-12))


def multilinear_map(features: jax.Array, probabilities: jax.Array) -> jax.Array:
    """CDAN's multilinear conditioning ``g (x) f`` (Long et al. 2018, Eq. 4): the outer product
    of each row's class probabilities ``[batch, C]`` and features ``[batch, F]``, flattened
    class-major to ``[batch, C * F]`` (entry ``c * F + i`` is ``g_c f_i``), TLlib's
    ``MultiLinearMap`` layout."""
    outer = probabilities[:, :, None] * features[:, None, :]
    return outer.reshape(features.shape[0], -1)


def randomized_map_matrices(
    key: jax.Array, features_dim: int, num_classes: int, output_dim: int = 1024
) -> tuple[jax.Array, jax.Array]:
    """The two fixed standard-normal matrices of the randomized map, ``[F, output_dim]`` and
    ``[C, output_dim]`` (TLlib draws them with ``torch.randn`` once, at construction; here
    they are a function of ``key``, so a run can draw the same ones at every step)."""
    feature_key, class_key = jax.random.split(key)
    return (
        jax.random.normal(feature_key, (features_dim, output_dim), jnp.float32),
        jax.random.normal(class_key, (num_classes, output_dim), jnp.float32),
    )


def randomized_multilinear_map(
    features: jax.Array,
    probabilities: jax.Array,
    feature_matrix: jax.Array,
    class_matrix: jax.Array,
) -> jax.Array:
    """CDAN's randomized multilinear map (Long et al. 2018, Eq. 6), for ``F * C`` above 4096:
    ``(f R_f) * (g R_g) / sqrt(output_dim)``, element-wise, with fixed random matrices from
    :func:`randomized_map_matrices` (TLlib's ``RandomizedMultiLinearMap``). Its inner product
    approximates the full map's in expectation, at ``output_dim`` (TLlib: 1024) columns."""
    highest = jax.lax.Precision.HIGHEST
    projected_features = jnp.dot(features.astype(jnp.float32), feature_matrix, precision=highest)
    projected_classes = jnp.dot(probabilities.astype(jnp.float32), class_matrix, precision=highest)
    return projected_features * projected_classes / jnp.sqrt(float(feature_matrix.shape[1]))


def mcc(target_logits: jax.Array, *, temperature: float = 2.5, mask=None) -> jax.Array:
    """Minimum class confusion (Jin et al. 2020), TLlib's ``MinimumClassConfusionLoss``.

    Softmax at ``temperature``; rows weighted by :func:`entropy_weights`; the class confusion
    matrix ``C = P^T diag(w) P`` (``[classes, classes]``) divided column-wise by its row sums
    (TLlib divides by ``sum(C, dim=1)`` broadcast over columns; C is symmetric, so these are
    also the column sums); the loss is the off-diagonal mass over the class count. Padding
    rows get weight 0, so they add nothing to C.
    """
    logits = target_logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    probabilities = jax.nn.softmax(logits / temperature, axis=-1)
    weights = entropy_weights(probabilities, mask=mask)
    highest = jax.lax.Precision.HIGHEST
    confusion = jnp.dot((probabilities * weights[:, None]).T, probabilities, precision=highest)
    # The guard only matters for a batch without real rows (all-zero mask): 0, not NaN.
    confusion = confusion / jnp.maximum(jnp.sum(confusion, axis=1), 1e-12)[None, :]
    return (jnp.sum(confusion) - jnp.trace(confusion)) / num_classes


# -- MMD: DAN's multi-kernel MMD and JAN's joint MMD -----------------------------------------


def _squared_distances(x: jax.Array) -> jax.Array:
    """``[N, N]`` squared Euclidean distances between the rows of ``x`` (zero diagonal), from
    the Gram matrix at full float32 precision (no TF32), clipped at 0 against rounding."""
    x = x.astype(jnp.float32)
    x = x.reshape(x.shape[0], -1)
    squares = jnp.sum(jnp.square(x), axis=-1)
    gram = jnp.dot(x, x.T, precision=jax.lax.Precision.HIGHEST)
    distances = jnp.maximum(squares[:, None] + squares[None, :] - 2.0 * gram, 0.0)
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, distances)


def _kernel_sum(
    x: jax.Array, weights: jax.Array, alphas: Sequence[float] | None, sigma: float | None
) -> jax.Array:
    """``sum_alpha exp(-d / (2 alpha m))`` over the rows of ``x``, ``m`` the mean squared
    distance over the real pairs (diagonal included, as TLlib's ``GaussianKernel`` with
    ``track_running_stats``; no gradient through ``m``); or one kernel of fixed ``sigma``
    (TLlib's ``GaussianKernel(sigma=...)``, which JAN uses on the softmax layer)."""
    distances = _squared_distances(x)
    if sigma is not None:
        return jnp.exp(-distances / (2.0 * sigma * sigma))
    pairs = weights[:, None] * weights[None, :]
    mean = jnp.sum(distances * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)
    mean = jnp.maximum(jax.lax.stop_gradient(mean), 1e-12)  # identical rows: no 0/0
    return sum(jnp.exp(-distances / (2.0 * alpha * mean)) for alpha in alphas)


def _mmd_estimate(
    kernel: jax.Array, source_weights: jax.Array, target_weights: jax.Array, linear: bool
) -> jax.Array:
    """MMD^2 from the kernel matrix over [source; target] rows, as TLlib's index matrix.

    Quadratic: the unbiased estimate (off-diagonal source-source and target-target means,
    minus twice the source-target mean), over real rows. Linear: Gretton et al.'s linear-time
    estimate over the cyclic pairs (i, i+1) of TLlib: ``k(s_i, s_i+1) + k(t_i, t_i+1) -
    k(s_i, t_i+1) - k(s_i+1, t_i)``, averaged over the pairs whose four rows are real. Both add
    TLlib's constant ``2 / (n - 1)`` (written ``1/(n_s - 1) + 1/(n_t - 1)``, real rows),
    which changes no gradient.
    """
    n_source = source_weights.shape[0]
    count_s, count_t = jnp.sum(source_weights), jnp.sum(target_weights)
    offset = 1.0 / jnp.maximum(count_s - 1.0, 1.0) + 1.0 / jnp.maximum(count_t - 1.0, 1.0)
    ss, tt = kernel[:n_source, :n_source], kernel[n_source:, n_source:]
    st = kernel[:n_source, n_source:]
    if linear:
        if n_source != target_weights.shape[0]:
            raise ValueError("the linear MMD estimate pairs rows: give equal batch sizes.")
        following = (jnp.arange(n_source) + 1) % n_source
        rows = jnp.arange(n_source)
        terms = ss[rows, following] + tt[rows, following]
        terms = terms - st[rows, following] - st[following, rows]
        real = source_weights * source_weights[following]
        real = real * target_weights * target_weights[following]
        return jnp.sum(terms * real) / jnp.maximum(jnp.sum(real), 1.0) + offset

    def within(block, weights, count):
        pairs = weights[:, None] * weights[None, :]
        off_diagonal = jnp.sum(block * pairs) - jnp.sum(jnp.diagonal(block) * weights)
        return off_diagonal / jnp.maximum(count * (count - 1.0), 1.0)

    cross = jnp.sum(st * source_weights[:, None] * target_weights[None, :])
    cross = cross / jnp.maximum(count_s * count_t, 1.0)
    return (
        within(ss, source_weights, count_s)
        + within(tt, target_weights, count_t)
        - 2 * cross
        + offset
    )


def mk_mmd(
    source: jax.Array,
    target: jax.Array,
    *,
    kernel_alphas: Sequence[float] = DEFAULT_KERNEL_ALPHAS,
    linear: bool = False,
    source_mask: jax.Array | None = None,
    target_mask: jax.Array | None = None,
) -> jax.Array:
    """Multi-kernel MMD^2 between ``source`` and ``target`` rows (DAN, Long et al. 2015),
    TLlib's ``MultipleKernelMaximumMeanDiscrepancy`` with ``GaussianKernel(alpha=a)`` for each
    ``a`` in ``kernel_alphas``: the kernel is the sum of Gaussians ``exp(-d / (2 a m))``, ``m``
    the batch's mean squared pairwise distance over all source + target rows (a constant: no
    gradient flows through the bandwidth, as TLlib's ``detach``).

    ``linear=False``: the unbiased quadratic estimate; ``linear=True``: the linear-time
    estimate (equal batch sizes). Both include TLlib's constant ``2 / (n - 1)``. Masks: padding
    rows are left out of the bandwidth, the pair averages and the constant's ``n``.

    Differs from TLlib: TLlib needs equal source and target batch sizes for both estimates;
    the quadratic one here takes any sizes.
    """
    return jmmd(
        [source],
        [target],
        kernel_alphas=kernel_alphas,
        prediction_sigma=None,
        linear=linear,
        source_mask=source_mask,
        target_mask=target_mask,
    )


def jmmd(
    sources: Sequence[jax.Array],
    targets: Sequence[jax.Array],
    *,
    kernel_alphas: Sequence[float] = DEFAULT_KERNEL_ALPHAS,
    prediction_sigma: float | None = 0.92,
    linear: bool = False,
    source_mask: jax.Array | None = None,
    target_mask: jax.Array | None = None,
) -> jax.Array:
    """Joint MMD^2 over several layers (JAN, Long et al. 2017), TLlib's
    ``JointMultipleKernelMaximumMeanDiscrepancy``: the kernel is the element-wise product of
    the layers' kernels, each over that layer's [source; target] rows.

    ``sources`` and ``targets`` list the layers' arrays (batch-first). Every layer gets the
    multi-kernel sum of :func:`mk_mmd` (``kernel_alphas``), except the last of two or more
    when ``prediction_sigma`` is set: one Gaussian of that fixed bandwidth, TLlib's JAN on the
    softmax layer (``GaussianKernel(sigma=0.92, track_running_stats=False)``). So
    ``jmmd([f_s, softmax(y_s)], [f_t, softmax(y_t)])`` is TLlib's JAN loss without its
    optional adversarial ``Theta`` layers. Estimates and masks as :func:`mk_mmd`.
    """
    if len(sources) != len(targets) or not sources:
        raise ValueError("jmmd: give the same non-zero number of source and target layers.")
    source_weights = _weights(source_mask, sources[0].shape[0])
    target_weights = _weights(target_mask, targets[0].shape[0])
    weights = jnp.concatenate([source_weights, target_weights])
    kernel = None
    for index, (source, target) in enumerate(zip(sources, targets, strict=True)):
        last = index == len(sources) - 1
        sigma = prediction_sigma if last and len(sources) > 1 else None
        layer = jnp.concatenate([source.astype(jnp.float32), target.astype(jnp.float32)])
        layer_kernel = _kernel_sum(layer, weights, kernel_alphas, sigma)
        kernel = layer_kernel if kernel is None else kernel * layer_kernel
    return _mmd_estimate(kernel, source_weights, target_weights, linear)

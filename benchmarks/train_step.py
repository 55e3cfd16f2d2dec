"""Times jaxdann's fused DANN step (B source + B target images per step) after compilation.

    python benchmarks/train_step.py --batch-size 32 --image-size 224 --steps 10 [--dtype bfloat16]
        [--arch alexnet|resnet18|resnet34|resnet50] [--compare-torch] [--breakdown]
        [--profile DIR] [--xla-defaults] [--stem conv|space_to_depth]
        [--pool-gradient first_max|xla] [--torch-threads N]

``--arch resnet*`` times TLlib's DANN recipe instead (``configs/office31_dann_resnet50.py``:
the ResNet, a 256-wide bottleneck with BatchNorm, a linear label classifier, a 1024-1024 domain
classifier with dropout 0.5, SGD momentum 0.9 weight decay 1e-3 with the backbone at 0.1 x the
annealed learning rate, the reversal coefficient ramped); its torch counterpart is TLlib's
eager step: one forward over ``torch.cat((x_s, x_t))``, cross-entropy on the source rows, the
domain loss through a reversal layer on all rows, one backward, one SGD step with the same
parameter groups; with ``--dtype bfloat16`` its forward runs under ``torch.autocast`` in
bfloat16, torch's counterpart of jaxdann's bfloat16 step.

With ``--compare-torch`` it also times a PyTorch eager implementation of the seed's step on the
same device, batch and size: three forward/backward passes (class loss on source, domain loss on
source, domain loss on target, as the seed does), then one SGD step; and prints the ratio. The
last line printed is one JSON object (``images_per_second`` counts source + target images).
The jax steps compile with the XLA options training uses
(``jaxdann.training.parallel.compiler_options``; on CPU: YNNPACK for matrix products only), or
with XLA's defaults under ``--xla-defaults``. The jax model is the one training builds from the
base config (``jaxdann.training.model_setup.build_from_config``: AlexNet, 7 classes, DANN with
the domain classifier shaped like the label classifier, dropout 0.5).
``--stem`` and ``--pool-gradient`` time AlexNet's computation variants
(``model.stem``/``model.pool_gradient``, ``jaxdann.models.AlexNetFeatures``: conv1 on
space-to-depth input, XLA's max-pool gradient): the same function and parameters, computed
differently.
"""

from __future__ import annotations

import argparse
import functools
import glob
import gzip
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdann import config as config_lib  # noqa: E402
from jaxdann.methods import Method  # noqa: E402
from jaxdann.models import Network  # noqa: E402
from jaxdann.training import parallel  # noqa: E402
from jaxdann.training.model_setup import build_from_config, initial_variables  # noqa: E402
from jaxdann.training.optim import (  # noqa: E402
    learning_rate_schedule,
    make_optimizer,
    optimizer_factories,
)
from jaxdann.training.step import TrainState, make_course, make_train_step  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PROFILED_STEPS = 3


# Dense peak rates (TFLOP/s) by device kind substring, from the vendors' datasheets (SXM parts):
# float32 here means the TF32 tensor-core rate XLA uses for float32 matmuls/convs by default.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 494.0},
    "H100": {"bfloat16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def alexnet_dann_train_flops(batch_size: int, image_size: int) -> float:
    """Model FLOPs of one fused DANN step (2 FLOPs per multiply-add, backward = 2x forward).

    Counted from the layer shapes, because XLA's cost analysis does not see inside the cuDNN
    convolutions on GPU. Features run on 2B images, the label head on B, the domain head on 2B.
    """

    def out(size, kernel, stride, pad):
        return (size + 2 * pad - kernel) // stride + 1

    macs, size, channels = 0, image_size, 3
    for features, kernel, stride, pad, pool in (
        (64, 11, 4, 2, True),
        (192, 5, 1, 2, True),
        (384, 3, 1, 1, False),
        (256, 3, 1, 1, False),
        (256, 3, 1, 1, True),
    ):
        size = out(size, kernel, stride, pad)
        macs += size * size * features * kernel * kernel * channels
        channels = features
        if pool:
            size = out(size, 3, 2, 0)
    head = 9216 * 4096 + 4096 * 4096  # hidden layers; the 7- and 2-way outputs are negligible
    forward = 2 * (2 * batch_size * macs + batch_size * (head + 4096 * 7))
    forward += 2 * (2 * batch_size * (head + 4096 * 2))
    return 3.0 * forward


def resnet_dann_train_flops(arch: str, batch_size: int, image_size: int) -> float:
    """Model FLOPs of one fused DANN step with a ResNet (2 FLOPs per multiply-add, backward =
    2x forward): the convolutions and linear layers over 2B images, counted from their shapes."""
    from jaxdann.models.resnet import RESNET_STAGES

    def out(size, kernel, stride):
        return (size + 2 * (kernel // 2) - kernel) // stride + 1

    kind, stages = RESNET_STAGES[arch]
    size = out(image_size, 7, 2)
    macs = size * size * 64 * 49 * 3
    size, channels = out(size, 3, 2), 64
    for stage, blocks in enumerate(stages):
        width = 64 * 2**stage
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            if kind == "basic":
                convs = ((width, 3, stride), (width, 3, 1))
            else:
                convs = ((width, 1, 1), (width, 3, stride), (4 * width, 1, 1))
            in_channels = channels
            for features, kernel, conv_stride in convs:
                size = out(size, kernel, conv_stride)
                macs += size * size * features * kernel * kernel * channels
                channels = features
            if stride != 1 or in_channels != channels:
                macs += size * size * channels * in_channels
    heads = channels * 256 + 256 * 1024 + 1024 * 1024 + 1024 * 2
    forward = 2 * (2 * batch_size * (macs + heads) + batch_size * 256 * 7)
    return 3.0 * forward


def _peak(dtype: str) -> float | None:
    kind = jax.devices()[0].device_kind
    if "PCIe" in kind or "NVL" in kind:  # lower clocks than the SXM parts' datasheet rates
        return None
    for name, rates in PEAK_TFLOPS.items():
        if name in kind:
            return rates[dtype]
    return None


def _alexnet_dann(dtype: str, variants: dict | None) -> tuple[Network, Method]:
    """The seed's model: AlexNet, 7 classes, the domain head; ``variants``: stem, pool_gradient.

    Built from the base config (constant reversal coefficient 0.1, domain loss weight 1, no
    augmentation), as training builds it.
    """
    config = config_lib.base_config()
    config.adaptation = "dann"
    config.model.arch = "alexnet"
    config.model.pretrained = "none"
    config.model.dtype = dtype
    for key, value in (variants or {}).items():
        config.model[key] = value
    config_lib.validate(config)
    return build_from_config(config, 7, mean=MEAN, std=STD)


def _resnet_config(arch: str, dtype: str):
    """TLlib's DANN recipe on ``arch`` (``configs/office31_dann_resnet50.py``), random init."""
    config = config_lib.base_config()
    config.adaptation = "dann"
    config.model.arch, config.model.pretrained, config.model.dtype = arch, "none", dtype
    config.model.bottleneck, config.model.domain_hidden = 256, "1024,1024"
    config.model.domain_init_from_classifier = False
    config.grl.schedule, config.grl.coefficient, config.grl.gamma = "dann", 1.0, 20.0
    opt = config.optimizer
    opt.learning_rate, opt.weight_decay, opt.schedule = 0.01, 1e-3, "annealed"
    opt.backbone_lr_multiplier = 0.1
    config_lib.validate(config)
    return config


def _model(arch: str, dtype: str, variants: dict | None):
    """``(network, method, optimizer_for, schedule_for, learning rate)`` of the timed step."""
    if arch == "alexnet":
        network, method = _alexnet_dann(dtype, variants)

        def optimizer_for(lr, course):
            return make_optimizer(
                "sgd",
                lr,
                momentum=0.9,
                weight_decay=5e-5,
                steps_per_epoch=course["steps_per_epoch"],
            )

        def schedule_for(lr, course):
            return learning_rate_schedule(lr, steps_per_epoch=course["steps_per_epoch"])

        return network, method, optimizer_for, schedule_for, 1e-3
    config = _resnet_config(arch, dtype)
    network, method = build_from_config(config, 7, mean=MEAN, std=STD)
    optimizer_for, schedule_for = optimizer_factories(config.optimizer)
    return network, method, optimizer_for, schedule_for, config.optimizer.learning_rate


def _initial_params(network: Network, method: Method, image_size: int) -> tuple[dict, dict]:
    """``(params, model_state)``: random, then the method's adjustment (as training starts)."""
    image_shape = (image_size, image_size, 3)
    return initial_variables(network, method, image_shape, jax.random.PRNGKey(0))


def time_jax(
    batch_size: int,
    image_size: int,
    steps: int,
    warmup: int,
    dtype: str,
    profile_dir: str | None = None,
    compiler_options: dict | None = None,
    variants: dict | None = None,
    arch: str = "alexnet",
    between=None,
) -> dict:
    """The fused step's timings; ``between()``, if given, runs after each timed step (untimed:
    ``--interleave`` times a torch step there, so both frameworks see the same load)."""
    jit = functools.partial(jax.jit, compiler_options=compiler_options or {})
    network, method, optimizer_for, schedule_for, lr = _model(arch, dtype, variants)
    course = make_course(steps_per_epoch=100, total_steps=steps + warmup)
    params, model_state = _initial_params(network, method, image_size)
    learning_rate = jnp.float32(lr)
    state = TrainState(
        jnp.zeros((), jnp.int32),
        params,
        method.init_optimizer(optimizer_for(learning_rate, course), params),
        learning_rate,
        model_state,
    )
    step = jit(make_train_step(method, optimizer_for, schedule_for), donate_argnums=0)
    rng = np.random.default_rng(0)
    shape = (batch_size, image_size, image_size, 3)
    batch = jax.device_put(
        {
            "source_images": rng.integers(0, 256, shape, dtype=np.uint8),
            "source_labels": rng.integers(0, 7, batch_size).astype(np.int32),
            "source_mask": np.ones(batch_size, np.float32),
            "target_images": rng.integers(0, 256, shape, dtype=np.uint8),
            "target_mask": np.ones(batch_size, np.float32),
        }
    )
    key = jax.random.PRNGKey(1)
    started = time.perf_counter()
    compiled = step.lower(state, batch, key, course).compile()
    compile_s = time.perf_counter() - started
    if arch == "alexnet":
        flops = alexnet_dann_train_flops(batch_size, image_size)
    else:
        flops = resnet_dann_train_flops(arch, batch_size, image_size)
    for _ in range(warmup):
        state, metrics = compiled(state, batch, key, course)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        state, metrics = compiled(state, batch, key, course)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - started)
        if between is not None:
            between()
    profile = None
    if profile_dir:  # for TensorBoard's profile plugin or Perfetto, and summarised below
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            for _ in range(PROFILED_STEPS):
                state, metrics = compiled(state, batch, key, course)
            jax.block_until_ready(state)
        profile = summarize_profile(profile_dir, PROFILED_STEPS)
    median = float(np.median(times))
    result = {
        "framework": "jax",
        "dtype": dtype,
        "compile_s": round(compile_s, 2),
        "step_s_median": median,
        "step_s_min": float(np.min(times)),
        "images_per_second": 2 * batch_size / median,
        "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
    }
    result["model_flops_per_step"] = flops
    result["tflops_per_second"] = flops / median / 1e12
    peak = _peak(dtype)
    if peak:
        result["peak_tflops"] = peak
        result["mfu"] = flops / median / 1e12 / peak
    if profile is not None:
        result["profile"] = profile
    return result


def summarize_profile(profile_dir: str, steps: int, top: int = 20) -> dict:
    """Where a step's time goes, from the trace's Perfetto JSON: operations (GPU kernels, or
    XLA:CPU's thunks) grouped by name, self time in milliseconds per step, largest first.

    Device timelines (``/device:...``, their stream lines where named) are used when the trace
    has any; otherwise the XLA client's threads on the host (the Python thread, dispatch only,
    is left out). ``busy_ms_per_step`` sums each thread's busy time: with several threads at
    work it exceeds the step's wall time. XLA:CPU's own (Eigen) convolutions leave no spans in
    the trace, so on CPU they are missing from both.
    """
    paths = sorted(
        glob.glob(os.path.join(profile_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    )
    if not paths:
        return {"error": f"no perfetto_trace.json.gz under {profile_dir}"}
    with gzip.open(paths[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes, threads = {}, {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "process_name":
            processes[event["pid"]] = event["args"]["name"]
        elif event.get("ph") == "M" and event.get("name") == "thread_name":
            threads[(event["pid"], event["tid"])] = event["args"]["name"]
    spans = [event for event in events if event.get("ph") == "X" and "dur" in event]
    on_device = [e for e in spans if processes.get(e["pid"], "").startswith("/device:")]
    # Kernels sit on the device's stream lines; other device lines (XLA modules, XLA ops) span
    # the same time again.
    streams = [e for e in on_device if "stream" in threads.get((e["pid"], e["tid"]), "").lower()]
    if on_device:
        chosen, timeline = streams or on_device, "device"
    else:  # the client's waits for its worker threads are not work
        chosen = [
            e
            for e in spans
            if threads.get((e["pid"], e["tid"]), "").startswith("tf_XLA")
            and "wait" not in e["name"].lower()
        ]
        timeline = "host XLA threads"
    # Self time: on each thread, every instant goes to the innermost span open then (the latest
    # started), so an executor around its thunks, or spans that overlap without nesting, never
    # count twice; busy time is the union of the spans.
    totals, counts, busy = {}, {}, 0.0
    by_thread = {}
    for event in chosen:
        by_thread.setdefault((event["pid"], event["tid"]), []).append(event)
        counts[event["name"]] = counts.get(event["name"], 0) + 1
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        points = sorted(
            {e["ts"] for e in thread_events} | {e["ts"] + e["dur"] for e in thread_events}
        )
        active, started = [], 0
        for begin, end in zip(points[:-1], points[1:], strict=True):
            while started < len(thread_events) and thread_events[started]["ts"] <= begin:
                active.append(thread_events[started])
                started += 1
            active = [e for e in active if e["ts"] + e["dur"] > begin]
            if active:
                innermost = max(active, key=lambda e: (e["ts"], -e["dur"]))
                totals[innermost["name"]] = totals.get(innermost["name"], 0.0) + end - begin
                busy += end - begin
    ranked = sorted(totals, key=totals.get, reverse=True)
    return {
        "timeline": timeline,
        "trace": paths[-1],
        "busy_ms_per_step": round(busy / steps / 1e3, 3),
        "top_ms_per_step": [
            {
                "name": name[:120],
                "ms": round(totals[name] / steps / 1e3, 3),
                "calls_per_step": counts[name] / steps,
            }
            for name in ranked[:top]
        ],
    }


def _median_seconds(function, *args, steps: int) -> float:
    jax.block_until_ready(function(*args))  # compile and warm up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def breakdown(
    batch_size: int,
    image_size: int,
    steps: int,
    dtype: str,
    compiler_options: dict | None = None,
    variants: dict | None = None,
    arch: str = "alexnet",
) -> dict:
    """Seconds of the step's parts, each jitted alone (median of ``steps``): the feature stack's
    forward and forward + backward over 2B images (in train mode: a ResNet's BatchNorm uses the
    batch's statistics), the heads' (bottleneck, label and domain classifiers) forward +
    backward on fixed features, and the optimizer update over all parameters. They overlap less
    than the fused step."""
    jit = functools.partial(jax.jit, compiler_options=compiler_options or {})
    import optax

    from jaxdann.models.grl import reverse_gradient

    network, method, optimizer_for, _, lr = _model(arch, dtype, variants)
    rng = np.random.default_rng(0)
    shape = (2 * batch_size, image_size, image_size, 3)
    images = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    params, model_state = _initial_params(network, method, image_size)
    labels = jnp.zeros(batch_size, jnp.int32)
    domains = jnp.concatenate([labels, jnp.ones(batch_size, jnp.int32)])
    dropout = jax.random.PRNGKey(1)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels

    def run(p, part, x):  # in train mode, as in the step (the heads' dropout is on)
        return network.run(p, model_state, part, x, train=True, rng=dropout)[0]

    def extract(p, x):
        return run(p, "features", x)

    def feature_loss(features_params, x):
        return jnp.sum(extract({"features": features_params}, x).astype(jnp.float32) ** 2)

    def heads_loss(p, features):
        if "bottleneck" in network.names:
            features = run(p, "bottleneck", features)
        class_logits = run(p, "classifier", features[:batch_size])
        domain_logits = run(p, "domain_classifier", reverse_gradient(features, 0.1))
        return (
            cross_entropy(class_logits, labels).mean()
            + cross_entropy(domain_logits, domains).mean()
        )

    optimizer = optimizer_for(jnp.float32(lr), make_course(100, steps + 1))
    opt_state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)

    def update(p, state, g):
        updates, state = optimizer.update(g, state, p)
        return optax.apply_updates(p, updates), state

    # The update runs donated, as in the fused step: each call consumes the previous outputs.
    donated_update = jit(update, donate_argnums=(0, 1))
    updated = jax.tree.map(jnp.copy, (params, opt_state))
    update_times = []
    for index in range(steps + 1):
        started = time.perf_counter()
        updated = jax.block_until_ready(donated_update(*updated, grads))
        if index:  # the first call compiles
            update_times.append(time.perf_counter() - started)

    features = jit(extract)(params, images)
    return {
        "features_forward_s": _median_seconds(jit(extract), params, images, steps=steps),
        "features_forward_backward_s": _median_seconds(
            jit(jax.grad(feature_loss)), params["features"], images, steps=steps
        ),
        "heads_forward_backward_s": _median_seconds(
            jit(jax.grad(heads_loss)), params, features, steps=steps
        ),
        "sgd_update_s": float(np.median(update_times)),
    }


def _time_torch_steps(step, device: str, steps: int, warmup: int) -> tuple[float, float]:
    """``(median, min)`` seconds of ``step()`` after ``warmup`` calls."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), float(np.min(times))


def tllib_step(arch: str, batch_size: int, image_size: int, dtype: str = "float32"):
    """``(step, device)``: TLlib's DANN step in torch eager
    (examples/domain_adaptation/image_classification/dann.py) with the model ``_resnet_config``
    describes: one forward over source + target, one backward, SGD (backbone at 0.1 x) and the
    per-iteration learning-rate and reversal schedules. ``dtype="bfloat16"``: the forward and
    the losses under ``torch.autocast`` in bfloat16 (torch's mixed precision; the parameters,
    gradients and update stay float32, as jaxdann's bfloat16 step keeps them)."""
    import torch
    import torchvision
    from torch import nn

    device = "cuda" if torch.cuda.is_available() else "cpu"

    class ReverseLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.alpha = alpha
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return grad.neg() * ctx.alpha, None

    torch.manual_seed(0)
    backbone = getattr(torchvision.models, arch)(weights=None)
    width = backbone.fc.in_features
    backbone.fc = nn.Identity()
    bottleneck = nn.Sequential(nn.Linear(width, 256), nn.BatchNorm1d(256), nn.ReLU())
    head = nn.Linear(256, 7)
    domain = nn.Sequential(
        *(nn.Dropout(0.5), nn.Linear(256, 1024), nn.ReLU()),
        *(nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU()),
        nn.Linear(1024, 2),
    )
    nn.ModuleList([backbone, bottleneck, head, domain]).to(device).train()
    others = [p for m in (bottleneck, head, domain) for p in m.parameters()]
    groups = [{"params": backbone.parameters(), "lr": 0.1}, {"params": others, "lr": 1.0}]
    optimizer = torch.optim.SGD(groups, lr=1.0, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.01 * (1.0 + 0.001 * i) ** -0.75
    )
    shape = (batch_size, 3, image_size, image_size)
    source = torch.randn(shape, device=device)
    target = torch.randn(shape, device=device)
    labels = torch.randint(0, 7, (batch_size,), device=device)
    domains = torch.cat([torch.zeros(batch_size), torch.ones(batch_size)]).long().to(device)
    iteration = [0]
    autocast = torch.autocast(device, torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        alpha = 2.0 / (1.0 + np.exp(-iteration[0] / 1000.0)) - 1.0
        with autocast:
            features = bottleneck(backbone(torch.cat((source, target))))
            class_loss = nn.functional.cross_entropy(head(features[:batch_size]), labels)
            domain_logits = domain(ReverseLayer.apply(features, alpha))
            loss = class_loss + nn.functional.cross_entropy(domain_logits, domains)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        iteration[0] += 1

    return step, device


def time_torch_tllib(
    arch: str, batch_size: int, image_size: int, steps: int, warmup: int, dtype: str = "float32"
) -> dict:
    """:func:`tllib_step`'s timings."""

    step, device = tllib_step(arch, batch_size, image_size, dtype)
    median, fastest = _time_torch_steps(step, device, steps, warmup)
    return _tllib_result(device, median, fastest, batch_size, dtype)


def _tllib_result(
    device: str, median: float, fastest: float, batch_size: int, dtype: str = "float32"
) -> dict:
    import torch

    return {
        "framework": f"torch {torch.__version__} eager ({device}), TLlib-style DANN",
        "dtype": "bfloat16 (autocast)" if dtype == "bfloat16" else "float32",
        "threads": torch.get_num_threads(),
        "step_s_median": median,
        "step_s_min": fastest,
        "images_per_second": 2 * batch_size / median,
    }


def time_torch(batch_size: int, image_size: int, steps: int, warmup: int) -> dict:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"

    class ReverseLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.alpha = alpha
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return grad.neg() * ctx.alpha, None

    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None, num_classes=7).to(device).train()
    domain = torchvision.models.alexnet(weights=None, num_classes=2).classifier.to(device).train()
    parameters = list(net.parameters()) + list(domain.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9, weight_decay=5e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    shape = (batch_size, 3, image_size, image_size)
    source = torch.randn(shape, device=device)
    target = torch.randn(shape, device=device)
    labels = torch.randint(0, 7, (batch_size,), device=device)
    zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
    ones = torch.ones(batch_size, dtype=torch.long, device=device)

    def features(x):
        return torch.flatten(net.avgpool(net.features(x)), 1)

    def seed_step():
        optimizer.zero_grad()
        loss_fn(net(source), labels).backward()
        loss_fn(domain(ReverseLayer.apply(features(source), 0.1)), zeros).backward()
        loss_fn(domain(ReverseLayer.apply(features(target), 0.1)), ones).backward()
        optimizer.step()

    median, fastest = _time_torch_steps(seed_step, device, steps, warmup)
    return {
        "framework": f"torch {torch.__version__} eager ({device})",
        "dtype": "float32",  # whatever --dtype says: the seed's step
        "tf32": {  # torch's defaults: TF32 convolutions, IEEE float32 matmuls (XLA: TF32 for both)
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
        "threads": torch.get_num_threads(),
        "step_s_median": median,
        "step_s_min": fastest,
        "images_per_second": 2 * batch_size / median,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="source images per step")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--arch",
        choices=("alexnet", "resnet18", "resnet34", "resnet50"),
        default="alexnet",
        help="alexnet: the seed's step; resnet*: TLlib's DANN recipe (see above)",
    )
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch's intra-op threads (0: its default)"
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="resnet* with --compare-torch: alternate jax and torch steps (a shared machine's "
        "load then falls on both alike)",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the step's parts, each jitted alone"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a jax.profiler trace of 3 steps and print its largest operations",
    )
    parser.add_argument(
        "--xla-defaults",
        action="store_true",
        help="compile with XLA's default options instead of jaxdann's (jaxdann.training.parallel)",
    )
    parser.add_argument(
        "--stem",
        choices=("conv", "space_to_depth"),
        default="conv",
        help="AlexNet's conv1 as a strided convolution or on space-to-depth input",
    )
    parser.add_argument(
        "--pool-gradient",
        choices=("first_max", "xla"),
        default="first_max",
        help="max-pool gradient: jaxdann's written-out backward or XLA's select_and_scatter",
    )
    args = parser.parse_args(argv)
    options = {} if args.xla_defaults else parallel.compiler_options()
    variants = {"stem": args.stem, "pool_gradient": args.pool_gradient}
    device = jax.devices()[0]
    result = {
        "benchmark": "train_step",
        "device": f"{device.platform}:{device.device_kind}",
        "cpu_count": os.cpu_count(),
        "arch": args.arch,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "steps": args.steps,
        "jax_version": jax.__version__,
        "compiler_options": options,
        "load_average_before": os.getloadavg()[0],
        **variants,
    }
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    between, torch_times = None, []
    interleave = args.compare_torch and args.interleave and args.arch != "alexnet"
    if interleave:
        torch_step, torch_device = tllib_step(
            args.arch, args.batch_size, args.image_size, args.dtype
        )
        _time_torch_steps(torch_step, torch_device, args.warmup, 0)

        def between():
            torch_times.append(_time_torch_steps(torch_step, torch_device, 1, 0)[0])

    jax_result = time_jax(
        args.batch_size,
        args.image_size,
        args.steps,
        args.warmup,
        args.dtype,
        args.profile,
        compiler_options=options,
        variants=variants,
        arch=args.arch,
        between=between,
    )
    jax_result["load_average_after"] = os.getloadavg()[0]  # the machine may be shared
    profile = jax_result.pop("profile", None)
    print("jax  :", json.dumps(jax_result), flush=True)
    if profile is not None:
        print(f"profile ({profile.get('timeline')}, ms per step):", flush=True)
        for row in profile.get("top_ms_per_step", []):
            print(f"  {row['ms']:9.3f}  x{row['calls_per_step']:<5g} {row['name']}", flush=True)
        result["profile"] = profile
    result |= {"dtype": args.dtype, **{k: v for k, v in jax_result.items() if k != "framework"}}
    if args.breakdown:
        parts = breakdown(
            args.batch_size,
            args.image_size,
            args.steps,
            args.dtype,
            compiler_options=options,
            variants=variants,
            arch=args.arch,
        )
        print("parts:", json.dumps(parts), flush=True)
        result["breakdown"] = parts
    if args.compare_torch:
        if interleave:
            median, fastest = float(np.median(torch_times)), float(np.min(torch_times))
            torch_result = _tllib_result(torch_device, median, fastest, args.batch_size, args.dtype)
            torch_result["interleaved"] = True
        elif args.arch == "alexnet":
            torch_result = time_torch(args.batch_size, args.image_size, args.steps, args.warmup)
        else:
            torch_result = time_torch_tllib(
                args.arch, args.batch_size, args.image_size, args.steps, args.warmup, args.dtype
            )
        torch_result["load_average_after"] = os.getloadavg()[0]
        print("torch:", json.dumps(torch_result), flush=True)
        result["torch"] = torch_result
        result["speedup_vs_torch"] = (
            jax_result["images_per_second"] / torch_result["images_per_second"]
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

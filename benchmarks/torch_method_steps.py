"""PyTorch eager CDAN+E and MCD steps written as TLlib's examples write them, for
``method_steps.py --compare-torch``: the same network shapes as jaxdann's (the backbone's
features, the label classifier ``[dropout -> linear -> relu] x hidden -> linear``, CDAN's
discriminator on the randomized multilinear map, MCD's second classifier), random init.
Images arrive as float tensors, as a DataLoader hands them over (jaxdann's step takes uint8 and
normalises on the device, inside the timed step). On a machine with CUDA the models and batch
live on the GPU and each step waits for the GPU to finish."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

RANDOMIZE_ABOVE = 4096
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _features(arch: str) -> tuple[nn.Module, int]:
    """The backbone's feature extractor and its output width."""
    if arch == "small_cnn":  # the DANN paper's MNIST network
        layers = [nn.Conv2d(3, 32, 5), nn.ReLU(), nn.MaxPool2d(2)]
        layers += [nn.Conv2d(32, 48, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
        return nn.Sequential(*layers), None
    import torchvision

    alexnet = torchvision.models.alexnet()
    return nn.Sequential(alexnet.features, alexnet.avgpool, nn.Flatten()), 9216


def _head(width: int, hidden, outputs: int, rate: float) -> nn.Module:
    layers = []
    for size in hidden:
        if rate > 0:
            layers.append(nn.Dropout(rate))
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


class _Discriminator(nn.Module):
    """TLlib's ConditionalDomainAdversarialLoss pieces: the (randomized) multilinear map and
    the DomainDiscriminator with batch norm."""

    def __init__(self, features: int, classes: int, hidden: int, randomized_dim: int):
        super().__init__()
        self.randomized = features * classes > RANDOMIZE_ABOVE
        width = randomized_dim if self.randomized else features * classes
        if self.randomized:
            self.register_buffer("rf", torch.randn(features, randomized_dim))
            self.register_buffer("rg", torch.randn(classes, randomized_dim))
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, f, g):
        if self.randomized:
            mapped = (f @ self.rf) * (g @ self.rg) / float(self.rf.shape[1]) ** 0.5
        else:
            mapped = torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)
        return self.net(_Reverse.apply(mapped, 1.0)).squeeze(1)


def _cdan_e_step(models, optimizer, x, labels, trade_off):
    features, classifier, discriminator = models
    count = labels.shape[0]
    f = features(x)
    y = classifier(f)
    cls_loss = F.cross_entropy(y[:count], labels)
    g = F.softmax(y, dim=1).detach()
    d = discriminator(f, g)
    entropy = -(g * torch.log(g + 1e-5)).sum(1)
    weight = 1.0 + torch.exp(-entropy)
    weight = weight / weight.sum() * x.shape[0]
    domain = torch.cat([torch.ones(count), torch.zeros(x.shape[0] - count)]).to(x.device)
    transfer = F.binary_cross_entropy_with_logits(d, domain, weight=weight)
    optimizer.zero_grad()
    (cls_loss + trade_off * transfer).backward()
    optimizer.step()


def _mcd_step(models, optimizers, x, labels, trade_off, num_k):
    features, first, second = models
    optimizer_g, optimizer_f = optimizers
    count = labels.shape[0]

    def forward():
        h = features(x)
        return first(h), second(h)

    def source_loss(y1, y2):
        return F.cross_entropy(y1[:count], labels) + F.cross_entropy(y2[:count], labels)

    def discrepancy(y1, y2):
        return (F.softmax(y1[count:], 1) - F.softmax(y2[count:], 1)).abs().mean()

    for stage in ("A", "B"):  # A: everything on the source; B: classifiers only
        optimizer_g.zero_grad()
        optimizer_f.zero_grad()
        y1, y2 = forward()
        loss = source_loss(y1, y2)
        if stage == "B":
            loss = loss - trade_off * discrepancy(y1, y2)
        loss.backward()
        if stage == "A":
            optimizer_g.step()
        optimizer_f.step()
    for _ in range(num_k):  # C: the features minimise the discrepancy
        optimizer_g.zero_grad()
        y1, y2 = forward()
        (trade_off * discrepancy(y1, y2)).backward()
        optimizer_g.step()


def torch_method_step(config, backbone, batch_size, image_size):
    """A function that runs one eager training step of ``config.adaptation`` (``cdan_e`` or
    ``mcd``) in train mode; the models and optimizers carry over from call to call."""
    torch.manual_seed(0)
    classes = 10 if config.model.arch == "small_cnn" else 7
    features, width = _features(config.model.arch)
    x = torch.rand(2 * batch_size, 3, image_size, image_size)
    if width is None:
        width = features(x[:1]).shape[1]
    rate, hidden = float(config.model.dropout_rate), tuple(backbone.classifier_hidden)
    classifier = _head(width, hidden, classes, rate)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, classes, batch_size))
    x, labels = x.to(DEVICE), labels.to(DEVICE)
    opt = config.optimizer
    sgd = dict(
        lr=float(opt.learning_rate),
        momentum=float(opt.momentum),
        weight_decay=float(opt.weight_decay),
    )
    method = config.method
    if config.adaptation == "cdan_e":
        discriminator = _Discriminator(
            width, classes, int(method.discriminator_hidden), int(method.randomized_dim)
        )
        models = tuple(m.to(DEVICE) for m in (features, classifier, discriminator))
        params = [p for m in models for p in m.parameters()]
        optimizer = torch.optim.SGD(params, **sgd)

        def work():
            _cdan_e_step(models, optimizer, x, labels, float(method.trade_off))
    else:
        second = _head(width, hidden, classes, rate)
        models = tuple(m.to(DEVICE) for m in (features, classifier, second))
        optimizers = (
            torch.optim.SGD(models[0].parameters(), **sgd),
            torch.optim.SGD([*models[1].parameters(), *models[2].parameters()], **sgd),
        )

        def work():
            _mcd_step(models, optimizers, x, labels, float(method.trade_off), int(method.num_k))

    for model in models:
        model.train()

    def step():
        work()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    return step


def time_torch_method(config, backbone, batch_size, image_size, steps, warmup=2) -> float:
    """Seconds per eager step of ``config.adaptation`` (``cdan_e`` or ``mcd``; median)."""
    step = torch_method_step(config, backbone, batch_size, image_size)
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        step()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return float(np.median(times))

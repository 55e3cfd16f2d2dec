"""Experiment configs: the base (every key, with the seed's defaults), files, and overrides.

A config file under ``configs/`` defines ``get_config()`` returning an
``ml_collections.ConfigDict``; variants import a base and change a few fields. Every key can
be overridden from the command line with ``--config.KEY=VALUE``; a key that does not exist is an
error that lists the valid ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import ml_collections

from jaxdann.errors import INTERRUPTED, ConfigError, exit_code

__all__ = [
    "ConfigError",
    "INTERRUPTED",
    "exit_code",
    "exit_process",
    "base_config",
    "demo_config",
    "load_config",
    "apply_overrides",
    "flatten",
    "validate",
    "to_dict",
    "parse_command_line",
    "config_from_command_line",
]


def exit_process(code: int) -> NoReturn:
    """Ends a command-line run with ``code``.

    After Ctrl-C, without the interpreter's clean-up: XLA may still be compiling on its own
    threads, and finalising Python under them crashed (SIGSEGV in 4 of 4 interrupts sent during
    compilation, jax 0.10.2). What jaxdann writes is whole on disk by then: metrics and JSON
    files are replaced whole, and the trainer waits for orbax's saves and deletions before it lets
    the interrupt through. In a multi-host run the other processes are not told; they stop with
    their own errors when this one is gone.
    """
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _method_config() -> ml_collections.ConfigDict:
    """``config.method``: the hyper-parameters of the methods beyond DANN (TLlib's defaults);
    each method reads its own."""
    method = ml_collections.ConfigDict()
    method.trade_off = 1.0  # weight of the adaptation loss (cdan, dan, jan, mdd, mcd, mcc)
    method.randomized = "auto"  # cdan: the randomized map above 4096 dims (auto), always, never
    method.randomized_dim = 1024  # cdan: the randomized multilinear map's width
    method.discriminator_hidden = 1024  # cdan: the domain discriminator's hidden width
    method.kernel_alphas = "0.125,0.25,0.5,1,2"  # dan, jan: Gaussian bandwidth factors
    method.linear_mmd = False  # dan, jan: the linear-time MMD estimate
    method.margin = 4.0  # mdd: the margin gamma
    method.adversarial_hidden = 1024  # mdd: the adversarial head's hidden width
    method.num_k = 4  # mcd: feature updates per step
    method.temperature = 2.5  # mcc
    method.mcc_weight = 0.0  # > 0: add the MCC loss on target to any method
    method.delta = 1.0  # afn: the feature-norm step
    method.afn_weight = 0.05  # afn: weight of the feature-norm loss
    method.afn_bottleneck = 1000  # afn: its bottleneck's width where model.bottleneck is 0
    return method


def _data_config() -> ml_collections.ConfigDict:
    """The ``data`` node: which data set, how it is read and preprocessed, augmentation."""
    data = ml_collections.ConfigDict()
    data.name = "pacs"  # a dataset (jaxdann.data.DATASETS); demo = the embedded demo
    data.format = "folder"  # folder | tfds
    data.root = ""  # "" = the dataset's $JAXDANN_<NAME>_ROOT (PACS: ../shared/data/PACS)
    data.source = "photo"  # one domain, or several (photo,cartoon): their union
    data.target = "art_painting"
    data.validation = "cartoon,sketch"  # held-out domains for model selection ("" = none)
    data.resize = 256
    data.crop = 224
    # shorter: the shorter side to data.resize (torchvision Resize, the seed's); square: to
    # data.resize x data.resize, bicubic (TLlib's ResizeImage). Image datasets; not tfds.
    data.resize_mode = "shorter"
    data.random_crop = False
    data.random_flip = False
    data.drop_last = False
    data.on_bad = "error"  # error | skip
    data.cache_dir = ""  # "" = $JAXDANN_CACHE_DIR or ~/.cache/jaxdann
    data.limit = 0  # >0: use at most this many images per domain (quick checks)
    data.shard_per_host = False  # each process loads only its share (multi-host)
    # Streaming: decode each batch from the files while training (Grain), instead of holding
    # every image in memory; for data larger than memory, and for random-resized-crop training.
    data.streaming = False
    data.workers = -1  # decoding processes: -1 one per core (at most 8); 0 threads only
    data.decode = "exact"  # exact | reduced: JPEGs decoded at the smallest scale needed
    data.resized_crop_scale = 0.0  # >0: RandomResizedCrop((s, 1)); TLlib 0.08, DomainBed 0.7
    data.color_jitter = 0.0  # >0: ColorJitter(s, s, s, min(s, 0.5)); TLlib 0.5, DomainBed 0.3
    data.grayscale = 0.0  # RandomGrayscale probability; DomainBed 0.1
    data.target_renderings = 1  # demo: renderings of each unlabelled target-train digit
    return data


def base_config() -> ml_collections.ConfigDict:
    """Every key that exists, with the seed study's settings (photo -> art_painting, AlexNet)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.epochs = 30
    config.batch_size = 256  # source images per step; as many target images ride along
    config.eval_batch_size = 512
    config.adaptation = (
        "dann"  # a registered method (jaxdann.methods.METHODS); "none" = source only
    )
    config.domain_loss_weight = 1.0
    config.log_every_epoch = True
    config.checkpoint_every_epochs = 1  # the last epoch is always saved; 0 = no checkpoints

    config.grl = ml_collections.ConfigDict()
    config.grl.schedule = "constant"  # "constant" | "dann" (2/(1+exp(-gamma p)) - 1)
    config.grl.coefficient = 0.1  # the constant, or the schedule's maximum
    config.grl.gamma = 10.0
    config.grl.warmup_epochs = 0  # coefficient 0 for these epochs; the ramp runs over the rest
    # How the features are trained against the domain classifier: "reverse" (the seed's and the
    # paper's gradient reversal: maximise its loss) or "inverted_labels" (minimise its loss on
    # swapped domain labels, which keeps a useful gradient when it is confident; Tzeng et al. 2017).
    config.grl.objective = "reverse"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # jaxdann.training.optim.OPTIMIZERS: sgd | adam | rmsprop
    config.optimizer.learning_rate = 1e-3
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-5
    config.optimizer.schedule = "step"  # step (torch StepLR) | annealed (the DANN paper's)
    config.optimizer.step_size = 20  # epochs between learning-rate decays (torch StepLR)
    config.optimizer.gamma = 0.1
    config.optimizer.clip_norm = 0.0  # > 0: rescale gradients to at most this global norm
    config.optimizer.backbone_lr_multiplier = 1.0  # the features' learning rate x this (TLlib 0.1)

    config.model = ml_collections.ConfigDict()
    config.model.arch = "alexnet"  # jaxdann.models.BACKBONES: alexnet | small_cnn
    config.model.pretrained = "weights/alexnet_imagenet.msgpack"  # or "none" for random init
    config.model.domain_hidden = "classifier"  # "classifier" (same structure) or widths "1024,1024"
    config.model.domain_init_from_classifier = True
    config.model.dropout_rate = 0.5
    config.model.bottleneck = (
        0  # > 0: Dense(width) + BatchNorm + ReLU after the backbone (TLlib 256)
    )
    config.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
    # How AlexNet computes (the same function and parameters): conv1 as a strided convolution or
    # on space-to-depth input; the max-pool gradient written out or XLA's select_and_scatter.
    config.model.stem = "conv"  # conv | space_to_depth
    config.model.pool_gradient = "first_max"  # first_max | xla
    config.model.batchnorm = "train"  # resnet*: train | frozen (fixed statistics, as DomainBed)

    config.data = _data_config()
    config.method = _method_config()

    config.eval = ml_collections.ConfigDict()
    config.eval.validation_every_epoch = False  # validation is otherwise measured at the end

    config.parallel = ml_collections.ConfigDict()
    config.parallel.num_devices = 0  # 0 = all local devices
    config.parallel.distributed = False  # call jax.distributed.initialize() first
    return config


def demo_config() -> ml_collections.ConfigDict:
    """The embedded demo: digits -> textured digits with the DANN paper's small CNN.

    Runs in under a minute on 2 CPU cores from a fresh install; nothing is downloaded.
    """
    config = base_config()
    config.epochs = 60
    config.batch_size = 64
    config.eval_batch_size = 1024
    # The recipe benchmarks/demo_selection.py chose on the development domain (round 13): the
    # reversal ramped 0 -> 0.3, and the DANN paper's annealed learning rate from 0.01.
    config.grl.schedule = "dann"
    config.grl.coefficient = 0.3
    config.optimizer.learning_rate = 0.01
    config.optimizer.schedule = "annealed"
    config.optimizer.step_size = 40  # used only with optimizer.schedule=step
    config.model.arch = "small_cnn"
    config.model.pretrained = "none"
    config.model.domain_hidden = "100"
    config.model.domain_init_from_classifier = False
    config.model.dropout_rate = 0.0
    config.data.name = "demo"
    config.data.source = "digits"
    config.data.target = "digits_textured"
    config.data.validation = "source_holdout"
    config.data.resize = 28
    config.data.crop = 28
    return config


def _configs_folder() -> str:
    """The ``configs/`` folder beside the jaxdann package (a source checkout or an editable
    install)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def resolve_config_path(path: str) -> str:
    """``path`` as given if it exists; else ``configs/NAME.py`` in jaxdann's own configs."""
    if os.path.exists(path):
        return path
    shipped = os.path.join(_configs_folder(), os.path.basename(path))
    if os.path.basename(os.path.dirname(os.path.normpath(path))) in ("configs", ""):
        if os.path.isfile(shipped):
            return shipped
    return path


def load_config(path: str | None) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a Python file (``None``: the embedded demo).

    ``configs/NAME.py`` is found in the current folder, else among jaxdann's own configs.
    """
    if path is None:
        return demo_config()
    path = resolve_config_path(path)
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder; name one of its .py files.")
    if not os.path.isfile(path):
        raise ConfigError(
            f"config file {path} does not exist (looked for {os.path.abspath(path)} and in "
            f"{_configs_folder()}); see configs/ for the experiments."
        )
    directory = os.path.dirname(os.path.abspath(path))
    name = "jaxdann_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, directory)  # so a variant can `import` the base file beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(directory)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config() function.")
    try:
        config = module.get_config()
    except TypeError as error:  # ConfigDict refuses a value of another type than the key's
        raise ConfigError(f"config file {path}: {error}") from None
    _check_keys(config, base_config(), path)
    missing = sorted(set(flatten(base_config())) - set(flatten(config)))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(
            f"config file {path}: get_config() lacks config keys {', '.join(missing[:5])}{more}; "
            "start it from jaxdann.config.base_config() and change what differs."
        )
    return config


def _check_keys(config, reference, where: str) -> None:
    flat, expected = flatten(config), flatten(reference)
    unknown = sorted(set(flat) - set(expected))
    if unknown:
        raise ConfigError(f"{where}: unknown config keys {', '.join(unknown)}.")
    for key, value in flat.items():
        kind = type(expected[key])
        if not isinstance(value, kind) and not (kind is float and type(value) is int):
            raise ConfigError(
                f"{where}: config key {key}={value!r} should be of type {kind.__name__}, "
                f"like its default {expected[key]!r}."
            )


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.name": "sgd", ...}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict | dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_dict(config) -> dict[str, Any]:
    return json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)


def _parse_value(key: str, text: str, current: Any) -> Any:
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text}: expected true or false.")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise ConfigError(f"--config.{key}={text}: expected {kind.__name__}.") from None
    return text


def apply_overrides(config, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Sets dotted keys from strings, parsed by the type of the value they replace."""
    flat = flatten(config)
    for key, text in overrides.items():
        if key not in flat:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(flat))}.")
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = _parse_value(key, text, flat[key])
    return config


_CHOICES = {
    "grl.schedule": ("constant", "dann"),
    "grl.objective": ("reverse", "inverted_labels"),
    "method.randomized": ("auto", "always", "never"),
    "optimizer.schedule": ("step", "annealed"),
    "model.dtype": ("float32", "bfloat16"),
    "model.stem": ("conv", "space_to_depth"),
    "model.pool_gradient": ("first_max", "xla"),
    "model.batchnorm": ("train", "frozen"),
    "data.format": ("folder", "tfds"),
    "data.on_bad": ("error", "skip"),
    "data.decode": ("exact", "reduced"),
    "data.resize_mode": ("shorter", "square"),
}
_POSITIVE = (
    "epochs",
    "batch_size",
    "eval_batch_size",
    "optimizer.learning_rate",
    "optimizer.step_size",
    "data.resize",
    "data.crop",
    "data.target_renderings",
)
_NON_NEGATIVE = (
    "seed",  # numpy's generators take non-negative seeds only
    "checkpoint_every_epochs",
    "domain_loss_weight",
    "grl.coefficient",
    "grl.gamma",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "optimizer.gamma",
    "optimizer.clip_norm",
    "data.limit",
    "data.color_jitter",
    "model.bottleneck",
    "optimizer.backbone_lr_multiplier",
    "parallel.num_devices",
)
NO_VALIDATION = ("", "none")  # data.validation values that mean: no validation data
DIGITS_VALIDATION = "source_holdout"


def validate(config) -> None:
    """Checks the values whose valid set is known; the error names the key and the choices."""
    flat = flatten(config)
    for key, choices in _CHOICES.items():
        if str(flat[key]) not in choices:  # exactly: the code compares the lower-case names
            raise ConfigError(f"config key {key}={flat[key]!r} is not one of {', '.join(choices)}.")
    for key in _POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(f"config key {key}={flat[key]!r} must be positive.")
    for key in _NON_NEGATIVE:
        if not flat[key] >= 0:
            raise ConfigError(f"config key {key}={flat[key]!r} must be 0 or more.")
    if not 0 <= flat["model.dropout_rate"] < 1:
        raise ConfigError(
            f"config key model.dropout_rate={flat['model.dropout_rate']!r} must be in [0, 1)."
        )
    _validate_registered(config, flat)
    if flat["data.crop"] > flat["data.resize"]:
        raise ConfigError("config key data.crop must not exceed data.resize.")
    if flat["data.resize_mode"] != "shorter" and flat["data.format"] == "tfds":
        raise ConfigError(
            "config key data.resize_mode=square needs data.format=folder; the TFDS builder "
            "stores shorter-side resizes."
        )
    if flat["data.target_renderings"] != 1 and flat["data.name"] != "demo":
        raise ConfigError(
            "config key data.target_renderings applies to the digits demo (data.name=demo) "
            f"only; leave it at 1 for data.name={flat['data.name']}."
        )
    _validate_streaming(flat)
    if not 0 <= flat["grl.warmup_epochs"] < flat["epochs"]:
        raise ConfigError("config key grl.warmup_epochs must be at least 0 and below epochs.")


# Training transforms that only a streamed run can apply (the pools hold centre crops).
STREAMING_ONLY = ("data.resized_crop_scale", "data.color_jitter", "data.grayscale", "data.decode")


def _validate_streaming(flat: dict) -> None:
    """The streaming keys' ranges, and the settings that need (or exclude) streaming."""
    for key in ("data.resized_crop_scale", "data.grayscale"):
        if not 0 <= flat[key] <= 1:
            raise ConfigError(f"config key {key}={flat[key]!r} must be in [0, 1].")
    if flat["data.workers"] < -1:
        raise ConfigError(
            f"config key data.workers={flat['data.workers']!r}: give -1 (one per core), 0 "
            "(threads only) or a number of processes."
        )
    if not flat["data.streaming"]:
        changed = [key for key in STREAMING_ONLY if flat[key] != _STREAMING_DEFAULTS[key]]
        if changed:
            raise ConfigError(
                f"config key {changed[0]}={flat[changed[0]]!r} applies to streamed data only "
                "(the in-memory pools hold centre crops); set data.streaming=true."
            )
        return
    if flat["data.shard_per_host"]:
        raise ConfigError(
            "config keys data.streaming and data.shard_per_host exclude each other; a streamed "
            "run reads its files on one process: turn one of them off."
        )
    if flat["data.format"] != "folder":
        raise ConfigError(
            f"config key data.streaming=true reads image files (data.format=folder), not "
            f"data.format={flat['data.format']!r}; set data.format=folder."
        )


_STREAMING_DEFAULTS = {
    "data.resized_crop_scale": 0.0,
    "data.color_jitter": 0.0,
    "data.grayscale": 0.0,
    "data.decode": "exact",
}


def registries() -> dict:
    """The config keys whose choices are registered names, and their tables."""
    from jaxdann.data import DATASETS
    from jaxdann.methods import METHODS
    from jaxdann.models.backbones import BACKBONES
    from jaxdann.training.optim import OPTIMIZERS

    return {
        "adaptation": METHODS,
        "model.arch": BACKBONES,
        "optimizer.name": OPTIMIZERS,
        "data.name": DATASETS,
    }


def _validate_registered(config, flat: dict) -> None:
    """Names looked up in their registries; the data keys checked by the dataset; a
    backbone's own keys left alone by the others."""
    for key, registry in registries().items():
        registry.get(flat[key])
    from jaxdann.data import DATASETS

    DATASETS.get(flat["data.name"]).check_settings(config.data)
    from jaxdann.models.backbones import BACKBONES

    backbone = BACKBONES.get(flat["model.arch"])
    for name, default in _variant_defaults().items():
        if name not in backbone.variants and flat[f"model.{name}"] != default:
            owners = [arch for arch in BACKBONES if name in BACKBONES[arch].variants]
            raise ConfigError(
                f"config key model.{name} applies to model.arch={'/'.join(owners)} only; leave "
                f"it at {default} for model.arch={flat['model.arch']}."
            )


def _variant_defaults() -> dict[str, str]:
    from jaxdann.models.backbones import BACKBONES

    return {k: v for arch in BACKBONES for k, v in BACKBONES[arch].variants.items()}


def describe_keys() -> str:
    """Every config key with its default and the comment beside it in :func:`base_config`,
    one per line, for ``--help``; registered choices are listed from their registries."""
    import inspect
    import re

    comments = {}
    sources = {"": inspect.getsource(base_config), "method.": inspect.getsource(_method_config)}
    for prefix, source in sources.items():
        for line in source.splitlines():
            match = re.match(r"\s*(?:config|method)\.([\w.]+) = .*?#\s*(.*)$", line)
            if match:
                comments[prefix + match.group(1)] = match.group(2).replace("``", "")
    choices = {key: ", ".join(registry.names()) for key, registry in registries().items()}
    choices |= {key: ", ".join(values) for key, values in _CHOICES.items()}
    lines = []
    for key, value in flatten(base_config()).items():
        text = f"  {key} = {value!r}"
        if key in choices:
            text += f"  [{choices[key]}]"
        if key in comments:
            text += f"  # {comments[key]}"
        lines.append(text)
    return "\n".join(lines)


def print_or_quiet(write) -> int:
    """Runs ``write()`` (which prints) and returns 0, also when the reader has gone away
    (``--help | head -1``): output to a closed pipe is dropped, not a traceback."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


# The command line is parsed here rather than with ml_collections' config_flags: config_flags
# needs absl's global FLAGS and app.run, reports a misspelled key as an absl error without the
# valid keys, and gives no way to map refusals to jaxdann's exit codes; this parser is small,
# reads the same --config FILE / --config.KEY=VALUE syntax, and types values by their defaults.
def parse_command_line(
    argv: Sequence[str], prog: str, extra_flags: Sequence[str] = ()
) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """Splits ``--config FILE``, ``--config.KEY=VALUE`` and ``--FLAG VALUE`` (for ``extra_flags``).

    Returns (config path, overrides, other flags). Anything else is a one-line error.
    """
    config_path, overrides, flags = None, {}, {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if name.startswith("--config."):
            if not has_value:
                if not args:
                    raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
                value = args.pop(0)
            overrides[name[len("--config.") :]] = value
            continue
        if name == "--config" or (name.startswith("--") and name[2:] in extra_flags):
            if not has_value:
                if not args:
                    raise ConfigError(f"{prog}: {name} needs a value")
                value = args.pop(0)
            if name == "--config":
                config_path = value
            else:
                flags[name.lstrip("-")] = value
            continue
        known = ", ".join(["--config FILE", "--config.KEY=VALUE"] + [f"--{f}" for f in extra_flags])
        raise ConfigError(f"{prog}: unrecognised argument {arg!r}; accepted: {known}")
    return config_path, overrides, flags


def config_from_command_line(
    argv: Sequence[str], prog: str, extra_flags: Sequence[str] = (), required: Sequence[str] = ()
) -> tuple[ml_collections.ConfigDict, str | None, dict[str, str]]:
    """What every command does first: parse, load the config file, apply overrides, validate.

    Returns (config, config path, other flags); a missing ``required`` flag is a ConfigError.
    """
    path, overrides, flags = parse_command_line(argv, prog, extra_flags)
    config = apply_overrides(load_config(path), overrides)
    validate(config)
    for flag in required:
        if flag not in flags:
            raise ConfigError(f"{prog} needs --{flag}")
    return config, path, flags

"""A trained run, ready to use: ``jaxdann.load_run(DIR).predict(images)``.

:func:`load_run` rebuilds the network from the folder's ``config.json``, restores the parameters
(and BatchNorm statistics) of its newest finished checkpoint, and preprocesses images as the
run did: resized to ``data.resize`` (``data.resize_mode``), centre crop ``data.crop``,
normalised with the data's mean and std. The class names and the normalisation come from
``model.json`` (:data:`jaxdann.training.run_folder.MODEL_RECORD`); a folder written without it
falls back to ``evaluation.json``'s class names and the dataset's normalisation (``data.name``).

Loading only reads: nothing in the folder is written, locked or cleaned up, so a finished run
is read as it is, and a run still training there neither blocks loading nor is blocked by it
(orbax writes a checkpoint under a temporary name and renames it when it is complete, so only
whole checkpoints are seen; the newest one at the moment of loading is used).

Computation is one ``jax.jit`` over a mesh with a ``data`` axis, as in training: the batch is
sharded over the devices, the parameters replicated; a short last batch is padded.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdann import config as config_lib
from jaxdann.errors import ConfigError, DamagedFile, DataError

__all__ = ["LoadedRun", "load_run", "read_run_config"]


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedRun:
    """A run's network and the variables of one checkpoint, on the devices of ``mesh``.

    ``predict`` gives class probabilities, ``features`` the representation the method aligns
    (the backbone's features, through the bottleneck if there is one).
    """

    workdir: str
    config: Any
    epoch: int  # the checkpoint's: the state after this epoch
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    network: Any
    variables: tuple[Any, Any]  # (params, model_state), replicated over the mesh
    mesh: Any
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def image_size(self) -> int:
        """The side of the square images the network sees (``data.crop``)."""
        return int(self.config.data.crop)

    def read_image(self, path) -> np.ndarray:
        """An image file (or file object) as the run's uint8 HWC input: RGB, resized, cropped;
        a file of a streamed run with ``data.decode=reduced`` decoded as its evaluation did."""
        from jaxdann.data.folder import preprocess_image
        from jaxdann.data.streaming import image_transform

        data = self.config.data
        if data.decode == "reduced" and isinstance(path, str | os.PathLike):
            return image_transform(data, train=False)(os.fspath(path))
        return preprocess_image(
            path, resize=int(data.resize), crop=int(data.crop), resize_mode=data.resize_mode
        )

    def prepare(self, images, *, preprocessed: bool = False) -> np.ndarray:
        """uint8 images as one NHWC batch of the run's input size.

        ``images``: an NHWC array, one HWC (or HW) image, or a sequence of them. By default each
        is resized and centre-cropped as :meth:`read_image` does with a file, whatever its size
        (a photo that happens to be ``data.crop`` square included), so an array gets the
        probabilities its file gets. ``preprocessed=True``: the images already are the run's
        input (``data.crop`` square, 3 channels, as the run's evaluation arrays are) and are
        taken as they are; any other shape is a DataError.
        """
        size = self.image_size
        images = np.asarray(images) if hasattr(images, "shape") else images  # jax arrays too
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            images = images[None]
        if preprocessed:
            return _as_input(images, size)
        batch = np.empty((len(images), size, size, 3), np.uint8)
        for index, image in enumerate(images):
            batch[index] = self._fit(np.asarray(image))
        return batch

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """One HWC (or HW) image resized and cropped as its PNG file would be."""
        from PIL import Image

        _check_uint8(image)
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
            raise DataError(
                f"an image of shape {image.shape} is not HWC with 1, 3 or 4 channels (nor HW)."
            )
        buffer = io.BytesIO()  # PNG is lossless: the file path's own resize and crop, exactly
        Image.fromarray(
            image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image
        ).save(buffer, format="PNG")
        buffer.seek(0)
        return self.read_image(buffer)

    def predict(
        self, images, batch_size: int | None = None, *, preprocessed: bool = False
    ) -> np.ndarray:
        """float32 [N, classes]: each image's class probabilities (softmax of the logits), in
        :attr:`class_names` order. ``batch_size``: images per device call (default
        ``eval_batch_size``). Images are resized and cropped as files are, unless
        ``preprocessed`` (see :meth:`prepare`)."""
        batch = self.prepare(images, preprocessed=preprocessed)
        return self._batched("probabilities", batch, batch_size)

    def features(
        self, images, batch_size: int | None = None, *, preprocessed: bool = False
    ) -> np.ndarray:
        """float32 [N, width]: the representation the method aligns (evaluation mode); images
        are taken as :meth:`predict` takes them."""
        batch = self.prepare(images, preprocessed=preprocessed)
        return self._batched("features", batch, batch_size)

    def _batched(self, output: str, images: np.ndarray, batch_size: int | None) -> np.ndarray:
        from jaxdann.training import parallel

        count, devices = len(images), self.mesh.size
        size = min(int(batch_size or self.config.eval_batch_size), max(count, 1))
        size = -(-size // devices) * devices
        function = self._function(output)
        sharded = parallel.batch_sharded(self.mesh)
        parts = []
        for start in range(0, max(count, 1), size):  # no images: one call, 0 rows kept
            chunk = images[start : start + size]
            padded = np.zeros((size, *images.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            result = function(self.variables, jax.device_put(padded, sharded))
            parts.append(np.asarray(jax.device_get(result))[: len(chunk)])
        return np.concatenate(parts).astype(np.float32)

    def _function(self, output: str) -> Callable:
        """The jitted ``(variables, images) -> output``, built once per output."""
        if output not in self._compiled:
            self._compiled[output] = _compile(self, output)
        return self._compiled[output]


def _as_input(images, size: int) -> np.ndarray:
    """Preprocessed images as one uint8 NHWC batch; a DataError for any not ``size`` square
    with 3 channels."""
    batch = images if isinstance(images, np.ndarray) else _stack(images, size)
    _check_uint8(batch)
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
        raise DataError(
            f"preprocessed images must be {size}x{size}x3 (the run's data.crop), got shape "
            f"{batch.shape[1:] if batch.ndim == 4 else batch.shape}; pass preprocessed=False to "
            "resize and crop them as files are."
        )
    return batch


def _stack(images, size: int) -> np.ndarray:
    """A sequence of images as one array; a DataError when their shapes differ."""
    arrays = [np.asarray(image) for image in images]
    if not arrays:
        return np.zeros((0, size, size, 3), np.uint8)
    if len({array.shape for array in arrays}) > 1:
        raise DataError(
            "preprocessed images must all have one shape (the run's data.crop square, 3 "
            "channels); pass preprocessed=False to resize and crop them as files are."
        )
    return np.stack(arrays)


def _check_uint8(images: np.ndarray) -> None:
    if images.dtype != np.uint8:
        raise DataError(
            f"images must be uint8 (0-255, HWC), got {images.dtype}; convert them first, "
            "e.g. (image * 255).round().astype(numpy.uint8) for floats in 0..1."
        )


def _compile(run: LoadedRun, output: str) -> Callable:
    from jaxdann.data.transforms import normalize
    from jaxdann.training import parallel

    network, mean, std = run.network, run.mean, run.std

    def apply(variables, images):
        params, model_state = variables
        inputs = normalize(images, mean, std)
        if output == "features":
            return network.embed(params, model_state, inputs, train=False)[0].astype(jnp.float32)
        logits = network.logits(params, model_state, inputs)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return jax.jit(
        apply,
        in_shardings=(parallel.replicated(run.mesh), parallel.batch_sharded(run.mesh)),
        out_shardings=parallel.batch_sharded(run.mesh),
        compiler_options=parallel.compiler_options(),
    )


def load_run(workdir: str | os.PathLike, *, num_devices: int = 0) -> LoadedRun:
    """The run in ``workdir`` at its newest checkpoint, on ``num_devices`` devices (0: all).

    A folder that is not a run, or holds no checkpoint, is a ConfigError (exit 2); a damaged
    file or checkpoint is a DamagedFile. Nothing in the folder changes.
    """
    from jaxdann.training import parallel
    from jaxdann.training.model_setup import build_from_config

    workdir = os.fspath(workdir)
    config = read_run_config(workdir)
    epoch, checkpoint = _newest_checkpoint(workdir, config)
    class_names, mean, std = _model_record(workdir, config)
    network, _ = build_from_config(config, len(class_names), mean=mean, std=std)
    params, model_state = _restore(checkpoint, _expected_variables(network, config))
    mesh = parallel.make_mesh(num_devices)
    variables = jax.device_put((params, model_state), parallel.replicated(mesh))
    return LoadedRun(workdir, config, epoch, class_names, mean, std, network, variables, mesh)


def read_run_config(workdir: str):
    """The config of the run in ``workdir`` (keys it lacks take their defaults); a ConfigError
    when ``workdir`` is not a run folder."""
    from jaxdann.training.run_folder import read_json

    if not os.path.isdir(workdir):
        raise ConfigError(f"--run {workdir}: no such folder; name a run folder (see runs/).")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"--run {workdir} is not a run folder (it has no config.json); name the folder "
            "`python -m jaxdann.train` printed (a sweep's runs are its cell folders)."
        )
    stored = config_lib.flatten(read_json(path, fix="restore it from a copy of the run"))
    config = config_lib.base_config()
    defaults = config_lib.flatten(config)
    unknown = sorted(set(stored) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{path} has keys this jaxdann does not know ({', '.join(unknown)}); use the "
            "jaxdann version that trained the run."
        )
    if "data.name" in stored:  # the demo's folders from before it was named "demo"
        from jaxdann.data.demo import current_dataset_name

        stored["data.name"] = current_dataset_name(stored["data.name"], stored.get("data.source"))
    for key, value in stored.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = float(value) if isinstance(defaults[key], float) else value
    return config


def _newest_checkpoint(workdir: str, config) -> tuple[int, str]:
    """(epoch, orbax item folder) of the newest finished checkpoint."""
    from jaxdann.training.run_folder import saved_epochs

    epochs = saved_epochs(workdir)
    if not epochs:
        raise ConfigError(
            f"--run {workdir} holds no checkpoint (checkpoint_every_epochs="
            f"{config.checkpoint_every_epochs}; sweep cells of at most 5 epochs save none "
            "unless --cell_checkpoints yes); train it with checkpoints to use it."
        )
    if epochs[-1] < int(config.epochs):  # still training, or later epochs were never saved
        warnings.warn(
            f"{workdir}: the newest checkpoint is after epoch {epochs[-1]} of "
            f"{int(config.epochs)} (checkpoint_every_epochs={config.checkpoint_every_epochs}); "
            "its parameters are used",
            stacklevel=3,
        )
    return epochs[-1], os.path.join(workdir, "checkpoints", str(epochs[-1]), "default")


def _model_record(workdir: str, config) -> tuple[tuple[str, ...], tuple, tuple]:
    """(class names, mean, std) from ``model.json``; without it (a folder written before it
    existed) the class names of ``evaluation.json`` (or the dataset's) and the dataset's
    normalisation."""
    from jaxdann.training.run_folder import MODEL_RECORD, read_json

    path = os.path.join(workdir, MODEL_RECORD)
    if os.path.exists(path):
        record = read_json(path, fix="restore it, or delete it to read evaluation.json instead")
        if not _is_model_record(record):
            raise DamagedFile(
                f"{path} is not a model record jaxdann wrote; restore it, or delete it to read "
                "evaluation.json instead."
            )
        return tuple(record["class_names"]), tuple(record["mean"]), tuple(record["std"])
    from jaxdann.data import DATASETS

    dataset = DATASETS.get(config.data.name)
    try:  # the dataset's normalisation is the run's only if it still takes the run's settings
        dataset.check_settings(config.data)
    except ConfigError as error:
        raise ConfigError(
            f"{workdir} records no {MODEL_RECORD}, and its data settings no longer fit the "
            f"{config.data.name} dataset, whose normalisation it would use: {error}"
        ) from None
    evaluation = os.path.join(workdir, "evaluation.json")
    if os.path.exists(evaluation):
        class_names = read_json(evaluation).get("class_names")
        if isinstance(class_names, list) and class_names:
            return tuple(map(str, class_names)), tuple(dataset.mean), tuple(dataset.std)
    try:
        class_names = dataset.class_names(config.data)
    except DataError as error:
        raise DataError(
            f"{workdir} records no class names (no {MODEL_RECORD} or evaluation.json) and "
            f"the data it trained on cannot be read for them: {error}"
        ) from None
    return tuple(class_names), tuple(dataset.mean), tuple(dataset.std)


def _is_model_record(record) -> bool:
    def numbers(value) -> bool:
        return (
            isinstance(value, list)
            and len(value) in (1, 3)
            and all(isinstance(v, int | float) for v in value)
        )

    return (
        isinstance(record, dict)
        and isinstance(record.get("class_names"), list)
        and len(record["class_names"]) > 0
        and all(isinstance(name, str) for name in record["class_names"])
        and numbers(record.get("mean"))
        and numbers(record.get("std"))
    )


def _expected_variables(network, config) -> dict:
    """The shapes and dtypes of the network's variables, without computing any."""
    from jaxdann.methods import get_method

    size = int(config.data.crop)
    head_inputs = get_method(config.adaptation).head_inputs
    return jax.eval_shape(
        lambda rng: network.init(rng, (size, size, 3), head_inputs), jax.random.PRNGKey(0)
    )


def _shape_tree(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def _restore(checkpoint: str, expected: dict) -> tuple[dict, dict]:
    """``(params, model_state)`` of the orbax item folder ``checkpoint`` as host arrays, read
    alone (the optimizer state stays on disk), checked against the network's ``expected``
    variables."""
    import orbax.checkpoint as ocp
    from etils import epath

    handler = ocp.PyTreeCheckpointHandler()
    try:
        stored = handler.metadata(epath.Path(os.path.abspath(checkpoint))).tree
        wanted = {"params": stored["params"]}
        if stored.get("model_state"):
            wanted["model_state"] = stored["model_state"]
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        arguments = ocp.args.PyTreeRestore(item=wanted, restore_args=as_numpy, partial_restore=True)
        restored = handler.restore(epath.Path(os.path.abspath(checkpoint)), args=arguments)
    except Exception as error:  # orbax and TensorStore raise many kinds
        first = str(error).splitlines()[0][:200] if str(error) else ""
        raise DamagedFile(
            f"the checkpoint {os.path.dirname(checkpoint)} cannot be read "
            f"({type(error).__name__}: {first}); move it out of its checkpoints/ folder to use "
            "the one before it."
        ) from error
    finally:
        handler.close()
    params, model_state = restored["params"], dict(restored.get("model_state") or {})
    given, wanted_shapes = _shape_tree({"params": params, **model_state}), _shape_tree(expected)
    if given != wanted_shapes:
        paths = sorted(set(given) | set(wanted_shapes))
        differing = [path for path in paths if given.get(path) != wanted_shapes.get(path)]
        raise DamagedFile(
            f"the checkpoint {os.path.dirname(checkpoint)} does not fit the network its "
            f"config.json describes (differing: {', '.join(differing[:5])}); restore the run's "
            "config.json."
        )
    return params, model_state

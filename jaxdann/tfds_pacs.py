"""PACS as a TensorFlow Datasets (TFDS) builder that builds and reads without TensorFlow.

Importing this module registers the ``pacs`` builder, so ``tfds.builder("pacs")`` and
``tfds.data_source("pacs")`` find it. The source is the user's own PACS folder, given as the
manual download directory; each domain becomes one split (``art_painting``, ``cartoon``,
``photo``, ``sketch``) whose records hold the image already preprocessed as
``jaxdann.data.folder.preprocess_image`` does it (uint8 ``[crop, crop, 3]``), its ``label``
(index into the sorted class folders) and its ``path`` relative to the root.

Why no TFDS ``Image`` feature: encoding it needs TensorFlow, so the records store the decoded
pixels as a plain uint8 tensor in ArrayRecord files, which ``tfds.data_source`` reads with
random access and NumPy only. The sizes are the builder config, named ``resize{R}_crop{C}``
(default ``resize256_crop224``, Resize(256) + CenterCrop(224)); any such name works.

Build and read (``data_dir`` defaults to ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)::

    import tensorflow_datasets as tfds
    import jaxdann.tfds_pacs  # registers "pacs"

    photo = tfds.data_source(
        "pacs/resize256_crop224",
        split="photo",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(
                manual_dir="/path/to/PACS", try_download_gcs=False
            )
        },
    )
    record = photo[0]  # {"image": uint8 [224, 224, 3], "label": int, "path": bytes}

From the shell (TFDS's own ``tfds build`` needs TensorFlow)::

    python -m jaxdann.tfds_pacs --root /path/to/PACS [--resize 256 --crop 224 --data_dir DIR]

A prepared dataset is not rebuilt when the images change: delete its folder
(``<data_dir>/pacs/<config>``) to rebuild. ``load_domains_tfds`` notices a dataset built from a
different file list and says so, but not one built from another root with the same file names
and other pixels: one ``data_dir`` holds one build per config, so give each PACS copy its own
``data_dir`` (``$TFDS_DATA_DIR`` for training runs, which use the default).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from jaxdann.data import pacs
from jaxdann.data.dataset import select_rows
from jaxdann.data.folder import require_root
from jaxdann.errors import ConfigError, DataError, exit_code, is_user_error

try:
    import array_record  # noqa: F401  (the ArrayRecord files TFDS writes and reads)
    import tensorflow_datasets as tfds
except ImportError as error:
    raise ImportError(
        f"The TFDS data format needs tensorflow-datasets and array_record ({error}); install "
        "them with pip install 'jaxdann[tfds]'."
    ) from error

_CONFIG_NAME = re.compile(r"resize(?P<resize>\d+)_crop(?P<crop>\d+)(?P<skip>_skipbad)?")
# Images decoded per batch of worker threads while generating one split.
_DECODE_CHUNK = 256
# Bytes a record holds besides its pixels (label, path, proto framing), an upper bound.
_RECORD_OVERHEAD = 512


def config_name(resize: int = 256, crop: int = 224, on_bad: str = "error") -> str:
    """The builder config name for these sizes, e.g. ``resize256_crop224``."""
    if on_bad not in pacs.ON_BAD:
        raise ConfigError(f"on_bad must be one of {', '.join(pacs.ON_BAD)}, got {on_bad!r}.")
    if not 0 < crop <= resize:
        raise ConfigError(f"Need 0 < crop <= resize, got crop={crop}, resize={resize}.")
    return f"resize{resize}_crop{crop}" + ("_skipbad" if on_bad == "skip" else "")


@dataclasses.dataclass
class PacsConfig(tfds.core.BuilderConfig):
    """Image sizes (torchvision Resize + CenterCrop) and what to do with undecodable images."""

    resize: int = 256
    crop: int = 224
    on_bad: str = "error"


def _parse_config_name(name: str) -> PacsConfig | None:
    match = _CONFIG_NAME.fullmatch(name)
    if match is None:
        return None
    resize, crop = int(match["resize"]), int(match["crop"])
    on_bad = "skip" if match["skip"] else "error"
    if name != config_name(resize, crop, on_bad):  # leading zeros; crop > resize raises
        return None
    return PacsConfig(
        name=name,
        resize=resize,
        crop=crop,
        on_bad=on_bad,
        description=(
            f"Resize({resize}) + CenterCrop({crop}); undecodable images "
            + ("left out with a warning." if on_bad == "skip" else "stop the build.")
        ),
    )


# Under ``python -m`` this file also runs as __main__; only the jaxdann.tfds_pacs copy registers.
class Pacs(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
    """PACS (Photo, Art painting, Cartoon, Sketch): 7 classes, one split per domain."""

    # Bump when the stored records would change for the same images (preprocessing, features).
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Preprocessed uint8 images, labels and paths; ArrayRecord files."}
    BUILDER_CONFIGS = [_parse_config_name(config_name())]
    DEFAULT_CONFIG_NAME = config_name()
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the PACS folder as the manual dir (DownloadConfig(manual_dir=...)). It must hold "
        "art_painting/ cartoon/ photo/ sketch/, each with the same class folders of images "
        "(<domain>/<class>/<image>)."
    )

    def __init__(self, *, file_format: str | None = None, **kwargs):
        # ArrayRecord by default: random access, and no TensorFlow to write or read it.
        super().__init__(file_format=file_format or "array_record", **kwargs)

    @classmethod
    def get_builder_config(cls, name: str, version: str | None = None) -> PacsConfig | None:
        """The predefined config, or one parsed from any ``resize{R}_crop{C}[_skipbad]`` name."""
        return super().get_builder_config(name, version) or _parse_config_name(name)

    def _info(self) -> tfds.core.DatasetInfo:
        crop = self.builder_config.crop
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    # Raw bytes: the default encoding would store every pixel as an int64.
                    "image": tfds.features.Tensor(
                        shape=(crop, crop, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    # Names come from the class folders at build time (sorted, as the folder
                    # reader sorts them).
                    "label": tfds.features.ClassLabel(),
                    "path": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # records in data.list_domain's order (integer keys)
            homepage="https://domaingeneralization.github.io/",
            citation=(
                "@inproceedings{li2017deeper, title={Deeper, Broader and Artier Domain "
                "Generalization}, author={Li, Da and Yang, Yongxin and Song, Yi-Zhe and "
                "Hospedales, Timothy M.}, booktitle={ICCV}, year={2017}}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        self.info.features["label"].names = list(pacs.check_classes(root, pacs.DOMAINS))
        return {domain: self._generate_examples(root, domain) for domain in pacs.DOMAINS}

    def _generate_examples(self, root: str, domain: str) -> Iterator[tuple[int, dict]]:
        config = self.builder_config
        paths, labels, _ = pacs.list_domain(root, domain, on_bad=config.on_bad)
        _check_fits_in_memory(domain, len(paths), config.crop)
        bad = []

        def decode(relative: str) -> np.ndarray | str:
            try:
                return pacs.preprocess_image(
                    os.path.join(root, relative), resize=config.resize, crop=config.crop
                )
            except pacs.DECODE_ERRORS as error:
                return f"{type(error).__name__}: {error}"

        # Threads: Pillow releases the GIL while decoding; map keeps the file order.
        with concurrent.futures.ThreadPoolExecutor(pacs.default_workers()) as executor:
            for start in range(0, len(paths), _DECODE_CHUNK):
                chunk = paths[start : start + _DECODE_CHUNK]
                images = executor.map(decode, chunk)
                for index, relative, image in zip(
                    range(start, start + len(chunk)), chunk, images, strict=True
                ):
                    if isinstance(image, str):
                        bad.append((relative, image))
                        continue
                    # With shuffling disabled TFDS writes records in the order of these keys.
                    yield index, {"image": image, "label": int(labels[index]), "path": relative}
        # Raising here, before TFDS finalises the split, leaves no dataset behind.
        pacs.apply_bad_policy(root, domain, bad, config.on_bad)


def _check_fits_in_memory(domain: str, count: int, crop: int) -> None:
    """Fail early where TFDS would need TensorFlow: a split too big for its in-memory buffer.

    TFDS holds a split's records in memory up to ``shuffle.MAX_MEM_BUFFER_SIZE`` (1 GB) and
    spills larger ones to temporary files through ``tf.io.gfile``, which needs TensorFlow.
    """
    from tensorflow_datasets.core import shuffle

    size = count * (crop * crop * 3 + _RECORD_OVERHEAD)
    if size <= shuffle.MAX_MEM_BUFFER_SIZE or importlib.util.find_spec("tensorflow"):
        return
    raise DataError(
        f"Domain {domain!r} has {count} images, about {size / 2**30:.1f} GiB at crop {crop}, "
        f"more than the {shuffle.MAX_MEM_BUFFER_SIZE / 2**30:.1f} GiB TFDS can write without "
        "TensorFlow; use a smaller crop, install tensorflow, or use data.format=folder."
    )


def load_domains_tfds(
    root: str,
    names: Sequence[str],
    *,
    resize: int = 256,
    crop: int = 224,
    data_dir: str | None = None,
    on_bad: str = "error",
    shard: tuple[int, int] = (0, 1),
    limit: int = 0,
) -> dict[str, pacs.Domain]:
    """Domains as ``jaxdann.data.pacs.load_domain`` gives them, read from the TFDS ``pacs``
    dataset.

    Builds the dataset from ``root`` into ``data_dir`` (default ``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``) the first time, then reads the ``names`` splits with
    ``tfds.data_source``: random access, NumPy only. ``on_bad`` is ``load_domain``'s; "skip"
    builds a config of its own. A DataError says when the stored dataset was built from other
    files than ``root`` now holds. ``shard=(index, count)`` and ``limit`` select the records
    read as ``load_domain`` selects files (:func:`jaxdann.data.dataset.select_rows`).
    """
    root = os.fspath(root)
    unknown = [name for name in names if name not in pacs.DOMAINS]
    if unknown:
        raise ConfigError(
            f"Domains {', '.join(map(repr, unknown))} are not PACS splits; use some of "
            f"{', '.join(pacs.DOMAINS)}."
        )
    pacs.check_classes(root, names)  # clear errors for a wrong root, before TFDS starts
    name = f"pacs/{config_name(resize, crop, on_bad)}"
    download_config = tfds.download.DownloadConfig(manual_dir=root, try_download_gcs=False)
    sources = tfds.data_source(
        name,
        split=list(names),
        data_dir=data_dir,
        download_and_prepare_kwargs={"download_config": download_config},
    )
    domains = {}
    for domain, source in zip(names, sources, strict=True):
        class_names = tuple(source.dataset_info.features["label"].names)
        rows = select_rows(len(source), shard, limit)
        images = np.empty((len(rows), crop, crop, 3), dtype=np.uint8)
        labels = np.empty((len(rows),), dtype=np.int32)
        paths = []
        for index, row in enumerate(rows):  # one by one: measured faster than __getitems__
            record = source[int(row)]
            images[index] = record["image"]
            labels[index] = record["label"]
            path = record["path"]
            paths.append(path.decode() if isinstance(path, bytes) else str(path))
        where = f"TFDS dataset {name!r} in {os.fspath(source.dataset_info.data_dir)!r}"
        stored_count = len(source) if len(rows) < len(source) else None
        _check_same_files(root, domain, paths, class_names, on_bad, where, stored_count)
        domains[domain] = pacs.Domain(domain, images, labels, class_names, tuple(paths))
    return domains


def _check_same_files(
    root: str,
    domain: str,
    stored: Sequence[str],
    class_names: tuple[str, ...],
    on_bad: str,
    where: str,
    stored_count: int | None = None,
) -> None:
    """Raise when the prepared split does not match the files under ``root`` now.

    ``stored_count``: ``stored`` is one shard of a split of that many records; it must be a subset
    of the files, and the whole split as many as the files (unless ``on_bad="skip"``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-image files were reported when it was built
        listed, _, listed_classes = pacs.list_domain(root, domain, on_bad=on_bad)
    stored_set, listed_set = set(stored), set(listed)
    # With on_bad="skip" the dataset may lack the undecodable images, nothing else.
    if stored_count is not None:
        complete = on_bad == "skip" or stored_count == len(listed_set)
        same = complete and stored_set <= listed_set
    else:
        same = stored_set == listed_set or (on_bad == "skip" and stored_set <= listed_set)
    if same and listed_classes == class_names:
        return
    different = sorted(stored_set ^ listed_set)
    raise DataError(
        f"Split {domain!r} of the {where} was built from other files than {root!r} holds now "
        f"({len(different)} paths differ: {pacs.format_paths(different)}; "
        f"classes {', '.join(class_names)} vs {', '.join(listed_classes)}); delete that folder "
        "to rebuild it, or pass another data_dir."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxdann.tfds_pacs``: build the TFDS dataset and print its splits."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxdann.tfds_pacs", description="Build the TFDS pacs dataset."
    )
    parser.add_argument("--root", default=pacs.default_root(), help="PACS root (%(default)s)")
    parser.add_argument("--resize", type=int, default=256, help="shorter side (%(default)s)")
    parser.add_argument("--crop", type=int, default=224, help="centre crop (%(default)s)")
    parser.add_argument("--on-bad", "--on_bad", dest="on_bad", choices=pacs.ON_BAD, default="error")
    parser.add_argument(
        "--data_dir", help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    args = parser.parse_args(argv)
    try:
        root = require_root(
            args.root,
            "give --root the PACS folder (art_painting/ cartoon/ photo/ sketch/) or set "
            "$JAXDANN_PACS_ROOT.",
        )
        domains = load_domains_tfds(
            root,
            pacs.DOMAINS,
            resize=args.resize,
            crop=args.crop,
            data_dir=args.data_dir,
            on_bad=args.on_bad,
        )
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return exit_code(error)
    name = config_name(args.resize, args.crop, args.on_bad)
    print(f"pacs/{name}: " + ", ".join(f"{d} {len(domain)}" for d, domain in domains.items()))
    return 0


if __name__ == "__main__":
    from jaxdann.tfds_pacs import main as registered_main  # the copy whose builder is registered

    raise SystemExit(registered_main())

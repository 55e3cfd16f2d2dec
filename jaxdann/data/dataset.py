"""What a dataset is: named domains and classes, images and labels per domain and split.

A dataset is one :class:`Dataset` subclass, registered by name in :data:`jaxdann.data.DATASETS`
(the config key ``data.name``). It says which domains exist (``domains``), which splits a domain
can be read in (``splits``), the class names the domains share (``class_names``), and gives the
images and labels of one domain and split (``load``) preprocessed the way the config's ``data``
settings say. :meth:`Dataset.plan` says which (domain, split) parts an experiment reads; the
default is the seed's protocol: the source domains' ``train_split`` (several sources are one
labelled union), the target's ``train_split`` unlabelled, target accuracy on its ``test_split``,
and held-out domains' ``test_split`` for validation. A dataset whose split lists hold a
source hold-out (``holdout``: PACS's ``train`` / ``crossval`` lists) validates on it with
``data.validation=source_holdout``.

Images stay uint8 NHWC on the host (resized and cropped, not normalised); ``mean`` and ``std``
are the statistics the train step normalises them with.

Adding a dataset: one module with a subclass (:class:`jaxdann.data.folder.ImageFolder` for a
``ROOT/<domain>/<class>/<image>`` tree needs only ``name``, ``domains`` and the root's defaults),
and one ``DATASETS.register(...)`` line in ``jaxdann/data/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxdann.errors import ConfigError

__all__ = [
    "ALL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOURCE_HOLDOUT",
    "Dataset",
    "Domain",
    "Plan",
    "parse_domains",
    "select_rows",
]

ALL = "all"  # the split name for every image of a domain
SOURCE_HOLDOUT = "source_holdout"  # data.validation: a held-out part of the source domain(s)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The random stream that picks a limited run's images: fixed, so every training seed (and every
# later run) uses the same subset and runs compare on the same data.
_LIMIT_STREAM = 3

Part = tuple[str, str]  # (domain, split)


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """The images and labels of one domain (one split of it), ready to batch.

    ``images`` are preprocessed (resized and centre-cropped) but not normalised, so they stay
    uint8 on the host and are normalised on the device.
    """

    name: str
    images: np.ndarray  # uint8 [N, crop, crop, 3]
    labels: np.ndarray  # int32 [N]
    class_names: tuple[str, ...]
    paths: tuple[str, ...] = ()  # image files relative to the root, in row order; () if none

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Plan:
    """The (domain, split) parts each part of an experiment reads.

    A part named twice (PACS measures target accuracy on the target set itself) is read once and
    is one object in the experiment. ``source`` parts (several labelled domains) are one union,
    as are the ``validation`` parts; no validation parts: no validation.
    """

    source: tuple[Part, ...]
    target: Part
    target_eval: Part
    validation: tuple[Part, ...] = ()


def select_rows(count: int, shard: tuple[int, int] = (0, 1), limit: int = 0) -> np.ndarray:
    """Which of ``count`` rows a load keeps, in order: the shard, then the limit.

    ``shard=(index, processes)`` keeps every ``processes``-th row from ``index``. ``limit > 0``
    then keeps ``ceil(limit / processes)`` of those, a fixed random subset (the same for every
    seed and run) in their original order. Datasets select files with it before decoding them.
    """
    index, processes = shard
    if not 0 <= index < processes:
        raise ValueError(f"shard {shard}: need 0 <= index < count.")
    rows = np.arange(index, count, processes)
    per_shard = -(-limit // processes) if limit > 0 else 0
    if per_shard and len(rows) > per_shard:
        keep = np.random.default_rng(_LIMIT_STREAM).permutation(len(rows))[:per_shard]
        rows = rows[np.sort(keep)]
    return rows


def _no_validation(value: str) -> bool:
    from jaxdann.config import NO_VALIDATION

    return value in NO_VALIDATION


def parse_domains(value: str) -> tuple[str, ...]:
    """The domains of a comma-separated config value, in order, blanks dropped."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


class Dataset:
    """One data set. Subclasses set the class attributes and implement ``class_names`` and
    ``load``; ``check_settings`` and ``plan`` have defaults for domain-per-role datasets.

    ``data`` arguments are the config's ``data`` node (``root``, ``format``, ``resize``,
    ``crop``, ``on_bad``, ``cache_dir``, ``limit``, ``source``, ``target``, ``validation``, ...).
    """

    name: str = ""
    domains: tuple[str, ...] = ()  # every domain a config may name
    splits: tuple[str, ...] = (ALL,)  # the splits ``load`` reads; ALL is the whole domain
    train_split: str = ALL  # what sources and the target train on
    test_split: str = ALL  # where target accuracy and held-out domains are measured
    holdout: tuple[str, str] | None = None  # (train, validation) splits of a source hold-out
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def class_names(self, data, domains: Sequence[str] | None = None) -> tuple[str, ...]:
        """The class names ``domains`` (default: all of them) share; label ``i`` is name ``i``.

        Raises a DataError when the domains' classes differ.
        """
        raise NotImplementedError

    def load(
        self,
        domain: str,
        split: str,
        data,
        *,
        shard: tuple[int, int] = (0, 1),
        limit: int = 0,
        progress: bool = True,
    ) -> Domain:
        """The images and labels of ``domain``'s ``split``, preprocessed as ``data`` says.

        Only the rows :func:`select_rows` ``(n, shard, limit)`` keeps are read (decoded): a
        process's share, and at most ``ceil(limit / processes)`` of it. ``progress``: report long
        loads on stderr. Unreadable data is a DataError; a name it does not have a ConfigError.
        """
        raise NotImplementedError

    def listed_splits(self, data, domain: str) -> tuple[str, ...]:
        """The splits of ``domain`` that ``python -m jaxdann.data`` counts (default:
        ``splits``)."""
        return self.splits

    def listing(self, domain: str, split: str, data) -> tuple[str, tuple[str, ...], np.ndarray]:
        """(folder, image files relative to it, int labels) of one part, decoding nothing where
        the dataset can (default: the part is loaded, and has no files)."""
        return "", (), self.load(domain, split, data, progress=False).labels

    def check_settings(self, data) -> None:
        """Raise a ConfigError naming the key and the choices for a domain name it lacks.

        Default: ``data.source`` names one or more domains (comma-separated, each once),
        ``data.target`` another, and ``data.validation`` lists other domains, or is
        ``source_holdout`` (datasets with a ``holdout``), "" or "none".
        """
        sources = self.source_domains(data)
        if not sources:
            raise ConfigError("config key data.source is empty; name one or more domains.")
        if len(set(sources)) != len(sources):
            raise ConfigError(f"config key data.source={data.source!r} names a domain twice.")
        for name in sources:
            self.check_domain(name, "data.source", data)
        self.check_domain(data.target, "data.target", data)
        if data.target in sources:
            raise ConfigError(
                f"config keys data.source and data.target both name {data.target!r}; the target "
                "must be another domain."
            )
        if data.validation == SOURCE_HOLDOUT:
            if self.holdout is None:
                raise ConfigError(
                    f"config key data.validation={SOURCE_HOLDOUT!r}: the {self.name} dataset has "
                    "no source hold-out lists; name held-out domains or 'none'."
                )
            return
        for name in self.validation_domains(data):
            self.check_domain(name, "data.validation", data)
            if name in (*sources, data.target):
                raise ConfigError(
                    f"config key data.validation lists {name!r}, which is the source or target; "
                    "validation must use held-out domains."
                )

    def plan(self, data) -> Plan:
        """The parts an experiment reads. Default: the sources' and the target's
        ``train_split``, target accuracy on its ``test_split`` (the same set when both are
        ``all``), held-out domains' ``test_split``; with ``data.validation=source_holdout``
        the sources' hold-out lists instead."""
        sources = self.source_domains(data)
        train, validation = self.train_split, ()
        if data.validation == SOURCE_HOLDOUT and self.holdout is not None:
            train, held_out = self.holdout
            validation = tuple((name, held_out) for name in sources)
        else:
            names = self.validation_domains(data)
            validation = tuple((name, self.test_split) for name in names)
        return Plan(
            source=tuple((name, train) for name in sources),
            target=(data.target, self.train_split),
            target_eval=(data.target, self.test_split),
            validation=validation,
        )

    def source_domains(self, data) -> tuple[str, ...]:
        """The domains ``data.source`` names (comma-separated: a union of labelled domains)."""
        return parse_domains(data.source)

    def validation_domains(self, data) -> tuple[str, ...]:
        """The domains ``data.validation`` names (comma-separated; "" or "none": none)."""
        if _no_validation(data.validation) or data.validation == SOURCE_HOLDOUT:
            return ()
        return parse_domains(data.validation)

    def study_parts(self, data, domains: Sequence[str]) -> tuple[Part, ...]:
        """The parts a study over ``domains`` (any of them source or target) may read, so that
        it reads each once: every domain's ``train_split`` and ``test_split``."""
        splits = tuple(dict.fromkeys((self.train_split, self.test_split)))
        return tuple((name, split) for name in domains for split in splits)

    def domain_names(self, data=None) -> tuple[str, ...]:
        """Every domain a config may name (``data``: for datasets whose domains are found in
        their root)."""
        return self.domains

    def present_domains(self, data) -> tuple[str, ...]:
        """The domains whose data the root holds (default: all of them), for listings."""
        return self.domain_names(data)

    def check_domain(self, domain: str, key: str | None = None, data=None) -> None:
        """A ConfigError for a domain this dataset does not have, naming the config ``key`` (if
        given) and the choices."""
        choices = self.domain_names(data)
        if domain not in choices:
            where = f"config key {key}={domain!r}" if key else f"domain {domain!r}"
            raise ConfigError(
                f"{where} is not a domain of the {self.name} dataset; "
                f"choose one of {', '.join(choices)}."
            )

    def check_split(self, split: str) -> None:
        """A ConfigError for a split this dataset does not have, naming the choices."""
        if split not in self.splits:
            raise ConfigError(
                f"split {split!r} is not one of the {self.name} dataset's splits; "
                f"choose one of {', '.join(self.splits)}."
            )

"""DomainNet (Peng et al. 2019): six domains, 345 classes, official train / test lists.

The official release is ``ROOT/<domain>/<class>/<image>.jpg`` with the lists
``ROOT/<domain>_train.txt`` and ``ROOT/<domain>_test.txt`` (or in ``ROOT/image_list/``, where
TLlib keeps them), lines ``<domain>/<class>/<image>.jpg <label from 0>``. The labels follow
DomainNet's own class order (not sorted: ``tent``, ``The_Eiffel_Tower``, ``tiger``), so the class
names are read from the lists. As TLlib does, sources
and the target train on their train lists (the target's without labels) and target accuracy is
measured on its test list; held-out domains validate on their test lists. The root is
``data.root``, else ``$JAXDANN_DOMAINNET_ROOT``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxdann.data.folder import ImageFolder, check_on_bad, class_folders
from jaxdann.data.image_list import classes_from_lists, read_image_list
from jaxdann.errors import DataError

__all__ = ["DOMAINS", "DomainNet"]

DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
_LIST_FOLDERS = ("", "image_list")


class DomainNet(ImageFolder):
    """DomainNet: the class folders give the class names, the official lists the images."""

    name = "domainnet"
    title = "DomainNet"
    domains = DOMAINS
    layout = "<domain>/<class>/<image> with <domain>_train.txt and <domain>_test.txt"
    splits = ("train", "test")
    train_split, test_split = "train", "test"
    root_variable = "JAXDANN_DOMAINNET_ROOT"

    def list_file(self, root: str, domain: str, split: str) -> str:
        """The official ``<domain>_<split>.txt``; a DataError naming where it was looked for."""
        name = f"{domain}_{split}.txt"
        candidates = [os.path.join(root, folder, name) for folder in _LIST_FOLDERS]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise DataError(
            f"DomainNet list {name} not found (looked for {' and '.join(map(repr, candidates))}); "
            f"put the official {name} in the root."
        )

    def domain_classes(self, root: str, domain: str) -> tuple[str, ...]:
        """The class names in the label order of the domain's lists (DomainNet's own order)."""
        folders = class_folders(root, self.check_layout(root, domain))
        lists = [self.list_file(root, domain, split) for split in self.splits]
        return classes_from_lists(lists, folders)

    def class_names(self, data, domains: Sequence[str] | None = None) -> tuple[str, ...]:
        root = self.require_root(self.root(data))
        per_domain = {d: self.domain_classes(root, d) for d in domains or self.domains}
        first, names = next(iter(per_domain.items()))
        for domain, other in per_domain.items():
            if other != names:
                raise DataError(
                    f"The lists of {first} and {domain} in {root!r} number the classes "
                    "differently; use the official lists of one release."
                )
        return names

    def list_split(
        self, root: str, domain: str, split: str, on_bad: str
    ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
        self.check_split(split)
        check_on_bad(on_bad)
        class_names = self.domain_classes(root, domain)
        paths, labels = read_image_list(self.list_file(root, domain, split), root, class_names)
        return paths, np.asarray(labels, np.int32), class_names

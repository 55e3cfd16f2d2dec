"""VisDA-2017 classification (Peng et al. 2017): synthetic renderings -> real photographs.

The official release is ``ROOT/train/`` (152,397 synthetic images) and ``ROOT/validation/``
(55,388 real ones, from COCO), each ``<class>/<image>`` for 12 classes with an
``image_list.txt`` of lines ``<class>/<image> <label from 0>`` relative to its folder. The
domains are ``train`` (the usual source) and ``validation`` (the usual target); each is read
whole from its list. The root is ``data.root``, else ``$JAXDANN_VISDA2017_ROOT``.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdann.data.folder import ImageFolder, check_on_bad, class_folders
from jaxdann.data.image_list import read_image_list
from jaxdann.errors import DataError

__all__ = ["DOMAINS", "VisDA2017"]

DOMAINS = ("train", "validation")
LIST_NAME = "image_list.txt"


class VisDA2017(ImageFolder):
    """VisDA-2017: each domain folder's ``image_list.txt`` lists its images."""

    name = "visda2017"
    title = "VisDA-2017"
    domains = DOMAINS
    layout = f"<domain>/<class>/<image> with <domain>/{LIST_NAME}"
    root_variable = "JAXDANN_VISDA2017_ROOT"

    def list_split(
        self, root: str, domain: str, split: str, on_bad: str
    ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
        self.check_split(split)
        check_on_bad(on_bad)
        class_names = class_folders(root, self.check_layout(root, domain))
        list_path = os.path.join(root, domain, LIST_NAME)
        if not os.path.isfile(list_path):
            raise DataError(
                f"{list_path!r} does not exist: the {self.title} layout is "
                f"{self.describe_layout()}; put the official {LIST_NAME} there."
            )
        paths, labels = read_image_list(list_path, root, class_names, prefix=domain)
        return paths, np.asarray(labels, np.int32), class_names

"""Datasets: where images and labels come from, per domain and split.

:data:`DATASETS` is the table the config key ``data.name`` chooses from. Each entry is a
:class:`~jaxdann.data.dataset.Dataset`: it names its ``domains`` and ``splits``, gives the
``class_names`` its domains share, and ``load`` s the uint8 images and int32 labels of one domain
and split, preprocessed as the config's ``data`` settings say. :mod:`jaxdann.data.folder` is the
generic ``ROOT/<domain>/<class>/<image>`` reader (decode + cache) that folder datasets share.

Adding a dataset: a module with a ``Dataset`` subclass (an ``ImageFolder`` subclass for a folder
tree) and one ``DATASETS.register`` line below.
"""

from jaxdann.data.dataset import ALL, Dataset, Domain, Plan, select_rows
from jaxdann.data.digits import Digits
from jaxdann.data.folder import ImageFolder
from jaxdann.data.pacs import PACS
from jaxdann.registry import Registry

__all__ = [
    "ALL",
    "DATASETS",
    "Dataset",
    "Digits",
    "Domain",
    "ImageFolder",
    "PACS",
    "Plan",
    "select_rows",
]

DATASETS: Registry[Dataset] = Registry("data.name", "dataset")
DATASETS.register("pacs", PACS())
DATASETS.register("digits", Digits())

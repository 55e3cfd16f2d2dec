"""Datasets: where images and labels come from, per domain and split.

:data:`DATASETS` is the table the config key ``data.name`` chooses from. Each entry is a
:class:`~jaxdann.data.dataset.Dataset`: it names its ``domains`` and ``splits``, gives the
``class_names`` its domains share, and ``load`` s the uint8 images and int32 labels of one domain
and split, preprocessed as the config's ``data`` settings say. :mod:`jaxdann.data.folder` is the
generic ``ROOT/<domain>/<class>/<image>`` reader (decode + cache) that folder datasets share;
:mod:`jaxdann.data.image_list` reads the official ``<path> <label>`` lists.

Adding a dataset: a module with a ``Dataset`` subclass (an ``ImageFolder`` subclass for a folder
tree) and one ``DATASETS.register`` line below.
"""

from jaxdann.data.dataset import ALL, SOURCE_HOLDOUT, Dataset, Domain, Plan, select_rows
from jaxdann.data.demo import Demo
from jaxdann.data.digits import Digits
from jaxdann.data.domainnet import DomainNet
from jaxdann.data.folder import Folder, ImageFolder
from jaxdann.data.office31 import Office31
from jaxdann.data.office_home import OfficeHome
from jaxdann.data.pacs import PACS
from jaxdann.data.visda2017 import VisDA2017
from jaxdann.registry import Registry

__all__ = [
    "ALL",
    "DATASETS",
    "SOURCE_HOLDOUT",
    "Dataset",
    "Demo",
    "Digits",
    "Domain",
    "DomainNet",
    "Folder",
    "ImageFolder",
    "Office31",
    "OfficeHome",
    "PACS",
    "Plan",
    "VisDA2017",
    "select_rows",
]

DATASETS: Registry[Dataset] = Registry("data.name", "dataset")
DATASETS.register("pacs", PACS())
DATASETS.register("demo", Demo())
DATASETS.register("digits", Digits())
DATASETS.register("office31", Office31())
DATASETS.register("office_home", OfficeHome())
DATASETS.register("domainnet", DomainNet())
DATASETS.register("visda2017", VisDA2017())
DATASETS.register("folder", Folder())

"""Domain-adaptation methods by name (``--config.adaptation=NAME``).

Adding a method: a module with a :class:`Method` subclass and one ``METHODS.register`` line
below (or in any module imported before the run starts, e.g. a test or a config file).
"""

from jaxdann.methods.afn import AFN
from jaxdann.methods.base import Method, masked_mean, per_example_loss
from jaxdann.methods.cdan import CDAN, CDANE
from jaxdann.methods.dan import DAN
from jaxdann.methods.dann import DANN
from jaxdann.methods.jan import JAN
from jaxdann.methods.mcc import MCC
from jaxdann.methods.mcd import MCD
from jaxdann.methods.mdd import MDD
from jaxdann.methods.source_only import SourceOnly
from jaxdann.registry import Registry

__all__ = ["METHODS", "Method", "get_method", "masked_mean", "per_example_loss"]

METHODS: Registry[type[Method]] = Registry("adaptation", "method")
METHODS.register("none", SourceOnly)
METHODS.register("dann", DANN)
METHODS.register("cdan", CDAN)
METHODS.register("cdan_e", CDANE)
METHODS.register("dan", DAN)
METHODS.register("jan", JAN)
METHODS.register("mcc", MCC)
METHODS.register("mdd", MDD)
METHODS.register("mcd", MCD)
METHODS.register("afn", AFN)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; a typo is a ConfigError listing the names."""
    return METHODS.get(name)

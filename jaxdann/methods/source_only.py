"""Source only: the label classifier trained on the source domain, no adaptation.

The baseline every method is compared with; its loss is :class:`~jaxdann.methods.base.Method`'s.
"""

from __future__ import annotations

from jaxdann.methods.base import Method

__all__ = ["SourceOnly"]


class SourceOnly(Method):
    label = "source only"

"""Office-Home (Venkateswara et al. 2017): four domains, 65 everyday object classes.

The official release (``OfficeHomeDataset_10072016``) is ``ROOT/<domain>/<class>/<image>.jpg``
with the domains Art (2,427 images), Clipart (4,365), Product (4,439) and ``Real World``
(4,357; the folder name has a space, so quote it on the command line:
``--config.data.target="Real World"``). Copies that renamed it ``Real_World`` (TLlib's) are read
too. The root is ``data.root``, else ``$JAXDANN_OFFICE_HOME_ROOT``.

Class numbers follow the sorted folder names (``Alarm_Clock`` is 0), as DomainBed's
``ImageFolder``; TLlib's ``OfficeHome.CLASSES`` lists them in another order (``Drill`` first),
so per-class tables and classifier heads from TLlib need that mapping (overall accuracy does not).
"""

from __future__ import annotations

import os

from jaxdann.data.folder import ImageFolder

__all__ = ["DOMAINS", "OfficeHome"]

DOMAINS = ("Art", "Clipart", "Product", "Real World")


class OfficeHome(ImageFolder):
    """Office-Home: the image-folder reader with its four domains."""

    name = "office_home"
    title = "Office-Home"
    domains = DOMAINS
    root_variable = "JAXDANN_OFFICE_HOME_ROOT"

    def domain_folder(self, root: str, domain: str) -> str:
        renamed = domain.replace(" ", "_")
        if not os.path.isdir(os.path.join(root, domain)) and os.path.isdir(
            os.path.join(root, renamed)
        ):
            return renamed
        return domain

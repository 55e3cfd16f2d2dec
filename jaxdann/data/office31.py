"""Office-31 (Saenko et al. 2010): three domains, 31 office object classes.

The official release (``domain_adaptation_images``) keeps each domain's class folders in an
``images`` folder: ``ROOT/<domain>/images/<class>/<image>.jpg`` (amazon 2,817 images, dslr 498,
webcam 795). The root is ``data.root``, else ``$JAXDANN_OFFICE31_ROOT``.
"""

from __future__ import annotations

from jaxdann.data.folder import ImageFolder

__all__ = ["DOMAINS", "Office31"]

DOMAINS = ("amazon", "dslr", "webcam")


class Office31(ImageFolder):
    """Office-31: the image-folder reader over ``<domain>/images/<class>/<image>``."""

    name = "office31"
    title = "Office-31"
    domains = DOMAINS
    layout = "<domain>/images/<class>/<image>"
    root_variable = "JAXDANN_OFFICE31_ROOT"

    def domain_folder(self, root: str, domain: str) -> str:
        return f"{domain}/images"

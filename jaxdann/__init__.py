"""jaxdann: domain adaptation in JAX/Flax, each piece checked against its PyTorch reference.

``jaxdann.load_run(DIR)`` loads a trained run for use (:mod:`jaxdann.inference`); it is imported
on first use, so ``import jaxdann`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str):
    if name == "load_run":
        from jaxdann.inference import load_run

        return load_run
    raise AttributeError(f"module 'jaxdann' has no attribute {name!r}")

"""jaxdann: domain adaptation in JAX/Flax, each piece checked against its PyTorch reference."""

__version__ = "0.1.0"

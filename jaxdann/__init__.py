"""jaxdann: Domain-Adversarial Neural Networks (Ganin & Lempitsky 2015) in JAX/Flax."""

__version__ = "0.1.0"

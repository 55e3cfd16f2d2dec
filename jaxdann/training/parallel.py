"""Data parallelism the way JAX recommends it now: ``jax.jit`` over a ``Mesh`` with a 'data' axis.

The batch is sharded along 'data'; parameters, optimizer state and the device-resident image pools
are replicated. XLA inserts the gradient all-reduce. One code path serves one device and many,
which is what ``pmap`` used to do (``pmap`` is in maintenance mode).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdann.errors import ConfigError

__all__ = [
    "make_mesh",
    "replicated",
    "batch_sharded",
    "maybe_initialize_distributed",
    "compiler_options",
]

# XLA:CPU hands matrix products and convolutions to the YNNPACK library by default (jax 0.10).
# For AlexNet's and the digits CNN's convolutions XLA's own kernels are faster on the 2-core
# development machine (the fused step at B=16: 1.23 -> 1.07 s; the demo's training: 38 -> 24 s;
# benchmarks/README.md), so jaxdann's train and evaluation steps keep YNNPACK for the matrix
# products only. Setting the option at all also keeps those steps clear of the default's wrong
# results for a matrix product followed by a sum (jax-ml/jax#39103, jaxlib 0.10.2;
# tests/test_parallel.py); jaxdann's other jits compile with XLA's defaults.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}

DATA_AXIS = "data"


def maybe_initialize_distributed(requested: bool) -> bool:
    """Calls ``jax.distributed.initialize()`` if the config or the environment asks for it.

    The environment asks with ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; with ``config.parallel.distributed=true`` and
    none of them, JAX detects the cluster itself (SLURM, Open MPI, TPU pods). CPU processes talk
    through gloo.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not (requested or address):
        return False
    if jax.distributed.is_initialized():
        return True
    arguments = {}
    if address:
        try:
            arguments = {
                "coordinator_address": address,
                "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                "process_id": int(os.environ["JAX_PROCESS_ID"]),
            }
        except (KeyError, ValueError):
            raise ConfigError(
                "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be "
                "set to integers too (the process count and this process's index)."
            ) from None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**arguments)
    return True


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-d mesh over the first ``num_devices`` devices (0 = all) along the 'data' axis."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ConfigError(
            f"config key parallel.num_devices={num_devices}, but {len(devices)} devices are "
            "visible; use 0 for all of them."
        )
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise ConfigError(
            "config key parallel.num_devices must be 0 (all devices) in a multi-host run."
        )
    chosen = devices[: num_devices or len(devices)]
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


@functools.cache
def compiler_options(platform: str | None = None) -> dict[str, str]:
    """Per-``jax.jit`` XLA options for jaxdann's train and evaluation steps on ``platform``.

    On CPU: YNNPACK for matrix products only (``_CPU_OPTIONS``). Empty on other platforms, where
    the installed XLA does not know the option, and where ``XLA_FLAGS`` already sets it (the
    user's choice wins). Cached per process, as XLA_FLAGS is read once; the first call starts the
    backend, so it comes after :func:`maybe_initialize_distributed` (the trainer builds its
    steps after it).
    """
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return {}
    if any(key in os.environ.get("XLA_FLAGS", "") for key in _CPU_OPTIONS):
        return {}
    try:  # an XLA that does not know the option rejects it when compiling
        probe = jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS)
        probe.lower(np.zeros((), np.float32)).compile()
    except (TypeError, jax.errors.JaxRuntimeError):
        return {}
    return dict(_CPU_OPTIONS)

"""Device mesh, batch sharding and multi-host start-up: one program for 1 CPU to a pod."""

import os

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aigc_jax.errors import UserError

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Call `jax.distributed.initialize()` when the launcher says this is a multi-process run.

    Set by cluster launchers (SLURM, TPU pods, Kubernetes) or by hand with the variables
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    """
    if jax.distributed.is_initialized():
        return
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")):
        jax.distributed.initialize()
    if jax.process_count() > 1:
        logging.info("process %d of %d, %d local devices, %d global devices",
                     jax.process_index(), jax.process_count(), jax.local_device_count(),
                     jax.device_count())


def create_mesh(config: ml_collections.ConfigDict | None = None) -> Mesh:
    """A 1-D mesh over all devices with axis "data" (data parallel)."""
    devices = np.asarray(jax.devices())
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding for arrays every device holds whole (parameters, optimizer state)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding for batches: the leading axis split over "data"."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """Raise a UserError unless the global batch splits evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n or batch_size % jax.process_count():
        raise UserError(f"{what}={batch_size} must be a positive multiple of the {n} devices "
                        f"(and of {jax.process_count()} processes).")


def shard_batch(mesh: Mesh, local_batch: dict) -> dict:
    """Assemble each process's rows into global jax.Arrays sharded along "data"."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def is_main_process() -> bool:
    """Only process 0 writes logs, samples and files."""
    return jax.process_index() == 0


def to_host(tree):
    """Fetch a pytree of (possibly multi-host sharded) arrays to numpy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)

"""Device mesh, batch sharding and multi-host start-up: one program for 1 CPU to a pod."""

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aigc_jax.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


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


def create_mesh(config: ml_collections.ConfigDict | None = None,
                devices: list | None = None) -> Mesh:
    """A (data, fsdp) mesh over all devices; `config.parallel.fsdp` sets the fsdp axis size.

    fsdp = 1 is plain data parallelism. Batches are split over both axes; parameters and
    optimizer state are split over "fsdp" (see `state_shardings`).
    """
    devices = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
    fsdp = int(config.parallel.fsdp) if config is not None and "parallel" in config else 1
    if fsdp <= 0 or len(devices) % fsdp:
        raise UserError(f"parallel.fsdp={fsdp} must be a positive divisor of the "
                        f"{len(devices)} devices.")
    return Mesh(devices.reshape(len(devices) // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding for arrays every device holds whole."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding for batches: the leading axis split over every device."""
    return NamedSharding(mesh, P((DATA_AXIS, FSDP_AXIS)))


def state_shardings(mesh: Mesh, abstract_state: Any, min_size: int = 2**14) -> Any:
    """Per-leaf shardings for a state: with an fsdp axis > 1, each large array is split along
    its largest dimension divisible by the axis size (ZeRO-3 style); the rest is replicated."""
    n = mesh.shape[FSDP_AXIS]

    def leaf(x: Any) -> NamedSharding:
        shape = getattr(x, "shape", ())
        if n == 1 or int(np.prod(shape)) < min_size:
            return replicated(mesh)
        for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
            if shape[axis] % n == 0:
                spec = [None] * len(shape)
                spec[axis] = FSDP_AXIS
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(leaf, abstract_state)


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """Raise a UserError unless the global batch splits evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n or batch_size % jax.process_count():
        raise UserError(f"{what}={batch_size} must be a positive multiple of the {n} devices "
                        f"(and of {jax.process_count()} processes).")


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
    """`batch_size` rounded up to split evenly over devices and processes (eval batches are
    padded, and the padding masked out, rather than rejected)."""
    n = int(np.lcm(mesh.devices.size, jax.process_count()))
    return max(n, -(-int(batch_size) // n) * n)


def shard_batch(mesh: Mesh, local_batch: dict) -> dict:
    """Assemble each process's rows into global jax.Arrays split over the mesh."""
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


# Dense peak FLOP/s by `jax.Device.device_kind` substring, for MFU (bf16 for accelerators).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12}


def peak_flops(config: ml_collections.ConfigDict, device: jax.Device | None = None) -> float:
    """FLOP/s of all devices for MFU: `config.peak_flops` when set, else the device-kind table
    entry times the device count (0.0 when unknown, e.g. on CPUs)."""
    if float(config.get("peak_flops", 0.0)) > 0:
        return float(config.peak_flops)
    kind = (device or jax.devices()[0]).device_kind
    return next((v for k, v in PEAK_FLOPS.items() if k in kind), 0.0) * jax.device_count()


def throughput(steps_per_sec: float, tokens_per_step: float, flops_per_step: float,
               peak: float) -> dict[str, float]:
    """tokens/s from steps/s, and model FLOPs utilisation when the peak FLOP/s is known (> 0)."""
    out = {"tokens_per_sec": steps_per_sec * tokens_per_step}
    if peak > 0:
        out["mfu"] = steps_per_sec * flops_per_step / peak
    return out

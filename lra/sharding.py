"""Device mesh and placement: one code path (``jax.jit`` with shardings over a ``Mesh``, the pjit model).

Batches are split over the ``data`` axis; parameters, optimizer state and mixer state are replicated (the ``model``
axis exists in the mesh so that partition rules can split parameters over it).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "model")


def make_mesh(mesh_config, devices=None) -> Mesh:
    """A ``data`` x ``model`` mesh from ``{"data": n, "model": m}``; -1 means "all remaining devices"."""
    devices = list(devices if devices is not None else jax.devices())
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)} in config.mesh; expected {MESH_AXES}")
    sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh {dict(mesh_config)}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"config.mesh {dict(mesh_config)} does not divide the {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"config.mesh {dict(mesh_config)} needs {math.prod(sizes)} devices, have {len(devices)}")
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local NumPy slices -> global arrays split over ``data`` along the batch axis."""
    sharding = data_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the data axis")

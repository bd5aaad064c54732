"""The only module that knows the mesh: axes, the logical-axis rules, and shardings.

Mesh axes are `data` (pure data parallel), `fsdp` (data parallel whose parameters and
optimizer state are sharded too: ZeRO-3) and `tensor` (attention heads and MLP columns
split across devices). Model code names logical axes on every parameter; one table
maps them here. The batch is split over data x fsdp.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (None: replicated along that dimension).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
)
_RULES = dict(LOGICAL_AXIS_RULES)


def mesh_shape(sizes: dict[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes of (data, fsdp, tensor); one -1 fills up to the device count."""
    shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
    fill = [i for i, s in enumerate(shape) if s == -1]
    if len(fill) > 1 or any(s == 0 or s < -1 for s in shape):
        raise UserError(
            f"config.mesh={dict(zip(MESH_AXES, shape, strict=True))}: sizes must be "
            "positive, with at most one -1 (fill)"
        )
    known = math.prod(s for s in shape if s != -1)
    if fill:
        if num_devices % known:
            raise UserError(
                f"config.mesh: {known} devices in the fixed axes do not divide the {num_devices} devices"
            )
        shape[fill[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise UserError(
            f"config.mesh={dict(zip(MESH_AXES, shape, strict=True))} has "
            f"{math.prod(shape)} devices, but there are {num_devices}"
        )
    return tuple(shape)


def make_mesh(sizes: dict[str, int], devices=None) -> Mesh:
    """A mesh over all devices; in a single process, fully given sizes may use fewer
    (the first ones), so that one machine can compare meshes of different sizes."""
    devices = jax.devices() if devices is None else devices
    fixed = [int(sizes.get(a, 1)) for a in MESH_AXES]
    if -1 not in fixed and 0 < math.prod(fixed) < len(devices) and jax.process_count() == 1:
        devices = devices[: math.prod(fixed)]
    shape = mesh_shape(sizes, len(devices))
    # Auto axes: XLA's sharding propagation places intermediates (the model code stays
    # free of sharding annotations); explicit mode would ask every gather for one.
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def spec_for(shape: tuple[int, ...], axes: tuple[str | None, ...], mesh: Mesh) -> PartitionSpec:
    """The PartitionSpec of one array: each logical axis through the rules, skipping a mesh
    axis already used by an earlier dimension or that does not divide the dimension."""
    used: set[str] = set()
    spec = []
    for dim, name in zip(shape, axes, strict=True):
        target = _RULES.get(name) if name else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n not in used and mesh.shape[n] > 1)
        if names and dim % math.prod(mesh.shape[n] for n in names) == 0:
            used.update(names)
            spec.append(names[0] if len(names) == 1 else names)
        else:
            spec.append(None)
    return PartitionSpec(*spec)


def param_shardings(abstract_params: nnx.State, mesh: Mesh) -> dict:
    """NamedShardings for a model's parameters (from eval_shape) by their `axes`, as a pure
    dict shaped like nnx.to_pure_dict(params)."""
    out: dict = {}
    for path, var in nnx.to_flat_state(abstract_params):
        axes = var.get_metadata().get("axes") or (None,) * len(var.shape)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = NamedSharding(mesh, spec_for(tuple(var.shape), tuple(axes), mesh))
    return out


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_divisor(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the batch axes (no gather)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def global_batch_from_whole(host: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A global batch from host arrays every process holds whole (fine-tuning: every process
    reads the task's rows and builds the same batch): each device takes its own slice wherever
    the mesh puts it (a batch replicated over a tensor axis that spans processes included)."""
    return put_global(host, {k: batch_sharding(mesh) for k in host})


def put_global(tree, shardings):
    """Host values (the same on every process) -> global arrays with these shardings."""

    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(put, tree, shardings)


def microbatch_sharding(mesh: Mesh) -> NamedSharding:
    """[microbatches, batch, ...]: the batch axis sharded as a batch, microbatches not."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))

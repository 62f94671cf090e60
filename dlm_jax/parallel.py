"""Device mesh (data, fsdp) and logical-axis sharding rules.

Batches are split over both axes; parameters (and the optimizer state and EMA
that mirror them) are split along their `embed` dimension over `fsdp`
(ZeRO-3 style: XLA all-gathers weights where a matmul needs them).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlm_jax.errors import UserError

AXES = ("data", "fsdp")
LOGICAL_RULES = (
    ("batch", AXES),
    ("embed", "fsdp"),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A (data, fsdp) mesh over `devices` (default: all); data = -1 takes what fsdp leaves."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise UserError(f"mesh.fsdp={fsdp} must divide the {n} available devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise UserError(f"mesh data={data} x fsdp={fsdp} != {n} devices; set mesh.data=-1 to infer")
  return Mesh(np.asarray(devices).reshape(data, fsdp), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(abstract_tree, mesh: Mesh):
  """NamedShardings for a pytree whose leaves carry flax logical-axis metadata."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, LOGICAL_RULES)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles this process's rows into globally sharded arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


class BoundFirst:
  """A jitted function with its first argument bound: the objective or the diffusion process,
  a pytree whose arrays (neighbour tables) enter the executable as arguments rather than as
  constants. Called and lowered like the jitted function without that argument."""

  def __init__(self, jitted, first, context=None):
    self.jitted, self.first, self.context = jitted, first, context

  def __call__(self, *args):
    if self.context is None:
      return self.jitted(self.first, *args)
    with self.context():
      return self.jitted(self.first, *args)

  def lower(self, *args):
    return self.jitted.lower(self.first, *args)

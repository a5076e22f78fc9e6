"""Sharding of the seed axis of a SAC run over the local devices.

The SAC state is stacked over a leading seed axis and the compiled update is
vmapped over it (sac/learner.py), so seeds never interact. On a host with
several devices, `seed_sharding` puts the state and the per-step host arrays
on a one-axis `jax.sharding.Mesh` ("seed") with
`NamedSharding(mesh, PartitionSpec("seed"))`, and jit's GSPMD partitioner
splits the vmapped computation along that axis: each device runs the update
of its own seeds, with no communication between devices.

Rule: with S seeds and D local devices, the mesh uses n devices, n the
largest divisor of S that is at most D, so every device holds S / n seeds:
all D devices when D divides S, 2 of 4 devices for S = 6, and one device for
S = 5 on 4 devices (logged). With n = 1 there is no mesh and nothing is
moved: a single-device run is unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seed"


def num_seed_devices(num_seeds: int, num_devices: int) -> int:
  """The largest divisor of `num_seeds` that is at most `num_devices`."""
  if num_seeds < 1 or num_devices < 1:
    raise ValueError(
        f"num_seeds and num_devices must be >= 1; got num_seeds={num_seeds!r}, "
        f"num_devices={num_devices!r}.")
  return max(d for d in range(1, min(num_seeds, num_devices) + 1)
             if num_seeds % d == 0)


def seed_sharding(num_seeds: int, devices: Sequence[jax.Device] | None = None
                  ) -> NamedSharding | None:
  """Sharding of a leading seed axis over the local devices, or None for one.

  Args:
    num_seeds: S, the length of the seed axis.
    devices: the devices to use; default `jax.local_devices()`.

  Returns:
    `NamedSharding(Mesh(devices[:n], ("seed",)), PartitionSpec("seed"))` with
    n = `num_seed_devices(S, len(devices))`, or None when n = 1.
  """
  devices = list(jax.local_devices() if devices is None else devices)
  n = num_seed_devices(num_seeds, len(devices))
  if n < len(devices):
    logging.info("num_seeds=%d is not divisible by the %d local devices; the "
                 "seed axis uses %d of them.", num_seeds, len(devices), n)
  if n == 1:
    return None
  logging.info("Seed axis (%d seeds) sharded over %d devices.", num_seeds, n)
  return NamedSharding(Mesh(devices[:n], (SEED_AXIS,)),
                       PartitionSpec(SEED_AXIS))


def place(tree: Any, sharding: NamedSharding | None) -> Any:
  """Puts each leaf of `tree` (leading seed axis) on `sharding`; None: as is."""
  if sharding is None:
    return tree
  return jax.device_put(tree, sharding)

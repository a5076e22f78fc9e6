"""Flax linen networks of SAC: a tanh-Gaussian actor and a critic ensemble.

Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
Sec. 5 and Appendix D: two-hidden-layer ReLU MLPs (256 units) for the policy
and the Q functions; the policy outputs the mean and log standard deviation
of a diagonal Gaussian that is squashed by tanh (Appendix C). The N critics
(clipped double Q, Fujimoto et al. 2018, Sec. 4.2) are one vmapped module, so
all N are evaluated by a single batched matmul per layer.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Bounds of the policy's log standard deviation, as in the authors'
# softlearning implementation (and sbx): keeps exp(log_std) in [2e-9, 7.4].
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


class MLP(nn.Module):
  """ReLU multilayer perceptron; the last layer is linear."""
  hidden_sizes: Sequence[int]
  output_size: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.output_size)(x)


class Actor(nn.Module):
  """obs [..., O] -> (mean, log_std) [..., A] of the pre-tanh Gaussian."""
  hidden_sizes: Sequence[int]
  action_dim: int

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    out = MLP(self.hidden_sizes, 2 * self.action_dim)(obs)
    mean, log_std = jnp.split(out, 2, axis=-1)
    return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class Critic(nn.Module):
  """(obs [..., O], action [..., A]) -> Q(s, a) [...]."""
  hidden_sizes: Sequence[int]

  @nn.compact
  def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    x = jnp.concatenate([obs, action], axis=-1)
    return MLP(self.hidden_sizes, 1)(x)[..., 0]


class CriticEnsemble(nn.Module):
  """N independent critics evaluated at once: -> Q_i(s, a), shape [N, ...].

  `nn.vmap` gives each member its own parameters (leading axis N) and
  initialisation key; the inputs are shared.
  """
  hidden_sizes: Sequence[int]
  num_critics: int = 2

  @nn.compact
  def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    ensemble = nn.vmap(
        Critic,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=None,
        out_axes=0,
        axis_size=self.num_critics)
    return ensemble(self.hidden_sizes)(obs, action)

"""A uniform replay buffer held in JAX arrays.

Hand-written because the update samples the buffer inside the compiled call
(no host round trip per batch), which the usual host-side buffers (SB3,
cleanrl's numpy buffers) cannot do, and flashbax would add a dependency for
~40 lines. The buffer is a pytree, so it is vmapped over seeds, donated,
and checkpointed with the rest of the state.

Stored per transition: obs s, action a (in [-1, 1], the policy's scale),
reward r, the true next observation s' (the final observation at episode
ends, never the reset observation) and terminated (1.0 only for true
terminal states; truncations store 0.0 and bootstrap).
"""

from __future__ import annotations

import chex
import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ReplayBuffer:
  obs: jax.Array           # [C, O]
  action: jax.Array        # [C, A]
  reward: jax.Array        # [C]
  next_obs: jax.Array      # [C, O]
  terminated: jax.Array    # [C], float32 0/1
  insert_index: jax.Array  # [], int32, next row to write
  size: jax.Array          # [], int32, rows filled (<= C)

  @property
  def capacity(self) -> int:
    return self.reward.shape[-1]


@flax.struct.dataclass
class Transition:
  obs: jax.Array           # [E, O]
  action: jax.Array        # [E, A]
  reward: jax.Array        # [E]
  next_obs: jax.Array      # [E, O]
  terminated: jax.Array    # [E]


def init(capacity: int, obs_dim: int, action_dim: int) -> ReplayBuffer:
  """An empty buffer with room for `capacity` transitions."""
  if capacity < 1:
    raise ValueError(f"buffer capacity must be >= 1; got {capacity}.")
  zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
  return ReplayBuffer(
      obs=zeros(capacity, obs_dim), action=zeros(capacity, action_dim),
      reward=zeros(capacity), next_obs=zeros(capacity, obs_dim),
      terminated=zeros(capacity), insert_index=jnp.zeros((), jnp.int32),
      size=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, batch: Transition) -> ReplayBuffer:
  """Writes E transitions at the insert index, overwriting the oldest (FIFO)."""
  num_new = batch.reward.shape[0]
  chex.assert_rank([batch.obs, batch.action, batch.reward], [2, 2, 1])
  rows = (buffer.insert_index + jnp.arange(num_new)) % buffer.capacity
  put = lambda store, values: store.at[rows].set(values.astype(store.dtype))
  return buffer.replace(
      obs=put(buffer.obs, batch.obs), action=put(buffer.action, batch.action),
      reward=put(buffer.reward, batch.reward),
      next_obs=put(buffer.next_obs, batch.next_obs),
      terminated=put(buffer.terminated, batch.terminated),
      insert_index=(buffer.insert_index + num_new) % buffer.capacity,
      size=jnp.minimum(buffer.size + num_new, buffer.capacity))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
  """Uniform sample (with replacement) of `batch_size` stored transitions."""
  rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  take = lambda store: jnp.take(store, rows, axis=0)
  return Transition(obs=take(buffer.obs), action=take(buffer.action),
                    reward=take(buffer.reward), next_obs=take(buffer.next_obs),
                    terminated=take(buffer.terminated))

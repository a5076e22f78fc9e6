"""Encoders and decoders of the three VAEs (flax.linen).

Parameters of a model are a dict {"encoder": ..., "decoder": ...} (plus
"codebook" for the VQ-VAE), so that encoder gradients can be measured and
estimated separately from decoder gradients.

- Gaussian VAE (Kingma & Welling 2014, Sec. 3 and Appendix C.2): MLP encoder
  784-200-200 -> (mean, log-variance) of 20 latents; mirrored MLP decoder
  20-200-200-784 giving Bernoulli logits.
- Categorical VAE (Jang et al. 2017, Sec. 4.2): MLP encoder 784-512-256 ->
  logits of 20 categorical latents with 10 classes; mirrored decoder
  200-256-512-784 on the flattened one-hot codes.
- VQ-VAE (van den Oord et al. 2017, Sec. 4.1, scaled down to 28x28): two
  stride-2 4x4 convolutions to a 7x7 grid of D-dimensional vectors; a
  codebook of K vectors; a decoder of two stride-2 transposed convolutions
  back to 28x28 Bernoulli logits.
ReLU hidden units throughout.
"""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Array = chex.Array


class MLP(nn.Module):
  """ReLU MLP: Dense(h) -> relu for each h in `hidden`, then Dense(out)."""
  hidden: Sequence[int]
  out: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.out)(x)


class ConvEncoder(nn.Module):
  """[B, 784] -> z_e [B, 7, 7, D] (two stride-2 4x4 convs, then a 1x1 conv)."""
  channels: int
  embedding_dim: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = x.reshape(x.shape[0], 28, 28, 1)
    h = nn.relu(nn.Conv(self.channels, (4, 4), strides=2, padding="SAME")(h))
    h = nn.relu(nn.Conv(self.channels, (4, 4), strides=2, padding="SAME")(h))
    h = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME")(h))
    return nn.Conv(self.embedding_dim, (1, 1))(h)


class ConvDecoder(nn.Module):
  """z_q [B, 7, 7, D] -> Bernoulli logits [B, 784]."""
  channels: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME")(z))
    h = nn.relu(nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2),
                                 padding="SAME")(h))
    h = nn.ConvTranspose(1, (4, 4), strides=(2, 2), padding="SAME")(h)
    return h.reshape(z.shape[0], 784)


def init_codebook(key: chex.PRNGKey, num_codes: int,
                  embedding_dim: int) -> Array:
  """Codebook [K, D] drawn from U(-1/sqrt(D), 1/sqrt(D))."""
  bound = 1.0 / jnp.sqrt(embedding_dim)
  return jax.random.uniform(key, (num_codes, embedding_dim), jnp.float32,
                            -bound, bound)

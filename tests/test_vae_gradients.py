"""The VAE gradient estimators, chained into the networks, are unbiased.

Oracle: a tiny categorical VAE (N=2 latents, K=3 classes) whose -ELBO is
computed exactly by enumerating the 9 latent configurations; its gradient by
jax.grad is the exact gradient. The score-function, REBAR and RELAX
estimates (encoder gradient through jax.vjp, decoder gradient at a sample)
must match it within 5 standard errors. For the Gaussian VAE, the pathwise
and score-function estimates must agree with each other.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import estimators
from launch.configs import vae as vae_config
from vae import data as vae_data
from vae import gradients
from vae import losses
from vae import models
from vae import train as vae_train


def _tiny_config(model, **overrides):
  config = vae_config.get_config("test")
  config.model = model
  config.hidden = (4,)
  config.num_latents = 2
  config.num_classes = 3
  for key, value in overrides.items():
    config[key] = value
  return config


def _batch():
  digits = vae_data.load_mnist(seed=0, num_train=10, num_test=10)
  return digits.test[:3]


def _exact_neg_elbo(model: models.CategoricalVAE, params, x):
  logits = model.encode(params["encoder"], x)  # [B, 2, 3]
  configs = jnp.array(list(itertools.product(range(3), repeat=2)))
  b = jax.nn.one_hot(configs, 3)  # [9, 2, 3]
  log_q = jax.vmap(lambda bb: losses.categorical_log_prob(bb, logits))(b)
  log_lik = losses.bernoulli_log_likelihood(
      model.decode(params["decoder"], b)[:, None], x)  # [9, B]
  expected = jnp.sum(jnp.exp(log_q) * log_lik, axis=0)
  return jnp.mean(losses.categorical_kl_to_uniform(logits) - expected)


def _checked_leaves(grads):
  """The encoder's output layer and the decoder's first layer."""
  return {"enc_out": grads["encoder"]["Dense_1"],
          "dec_in": grads["decoder"]["Dense_0"]}


def _assert_within_5se(moments, target, num_repeats):
  for name in moments.mean:
    for leaf in moments.mean[name]:
      mean = np.asarray(moments.mean[name][leaf])
      se = np.sqrt(np.asarray(moments.variance[name][leaf]) / num_repeats)
      exact = np.asarray(target[name][leaf])
      assert np.all(np.abs(mean - exact) <= 5 * se + 1e-6), (
          name, leaf, np.max(np.abs(mean - exact) / (se + 1e-12)))


@pytest.mark.parametrize("estimator", ["score_function", "rebar", "relax"])
def test_categorical_estimators_are_unbiased_against_enumeration(estimator):
  config = _tiny_config("categorical", estimator=estimator, relax_hidden=4)
  model = vae_train.make_model(config)
  state = vae_train.init_state(model, config, jax.random.key(0),
                               optax.adam(1.0), optax.adam(1.0))
  x = _batch()
  exact = _checked_leaves(jax.grad(_exact_neg_elbo, argnums=1)(
      model, state.params, x))
  grad_fn = vae_train.make_grad_fn(model, config)
  num_repeats = 600
  moments = jax.jit(lambda k: estimators.grad_moments(
      lambda kk: _checked_leaves(grad_fn(state.params, state.cv_params, x, kk,
                                         jnp.int32(0))[0]),
      k, num_repeats=num_repeats))(jax.random.key(1))
  _assert_within_5se(moments, exact, num_repeats)
  # The checked gradient is not negligible against its standard error.
  bias = np.asarray(exact["enc_out"]["bias"])
  se = np.sqrt(np.asarray(moments.variance["enc_out"]["bias"]) / num_repeats)
  assert np.max(np.abs(bias) / se) > 8


def test_gaussian_pathwise_and_score_function_agree_in_expectation():
  config = _tiny_config("gaussian", num_samples=4)
  model = vae_train.make_model(config)
  state = vae_train.init_state(model, config, jax.random.key(0),
                               optax.adam(1.0), optax.adam(1.0))
  x = _batch()
  num_repeats = 1000

  def moments(encoder_grad, key):
    def grad(k):
      g, _ = gradients.gaussian_grads(model, state.params, x, k,
                                      encoder_grad=encoder_grad,
                                      num_samples=4)
      return g["encoder"]["Dense_1"]
    return jax.jit(lambda k: estimators.grad_moments(
        grad, k, num_repeats=num_repeats))(key)

  path = moments("pathwise", jax.random.key(1))
  score = moments("score_function", jax.random.key(2))
  for leaf in path.mean:
    diff = np.asarray(path.mean[leaf] - score.mean[leaf])
    se = np.sqrt(np.asarray(path.variance[leaf] + score.variance[leaf])
                 / num_repeats)
    assert np.all(np.abs(diff) <= 5 * se), leaf
    # The score function's variance is larger (the central claim).
    assert np.sum(score.variance[leaf]) > 3 * np.sum(path.variance[leaf])

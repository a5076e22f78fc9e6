"""The Gamma VAE (vae/gamma.py): unbiased encoder gradients, exact densities.

Oracles (a tiny Gamma VAE, 2 latents, 3 digits; means within 5 standard
errors computed from the draws):
  * The gradient of the batch-mean -ELBO obtained by differentiating
    KL - mean_s log p(x | z_s) through distrax Gamma samples of the whole
    batch (one jax.grad; implicit reparameterization, Figurnov et al. 2018):
    written without the per-digit estimators, the jax.vjp into the encoder
    or the separate decoder pass. All four estimators are unbiased, so
    their means must match its mean.
  * With a decoder whose weights are all zero, every pixel has probability
    1/2 whatever z is, so log w = -784 log 2 + log p(z) - log q(z) and
    E_q[log w] = -784 log 2 - KL(q || p), the KL in closed form.
  * `encoder_grad_variance` of a gradient with independent N(0, s_j^2)
    entries is sum_j s_j^2.
"""

import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import gamma
from vae import gradients
from vae import losses
import tiny_vae

NUM_REPEATS = tiny_vae.NUM_REPEATS
MODEL, PARAMS, X = tiny_vae.setup(model="gamma", encoder_grad="implicit")
_checked, _moments = tiny_vae.checked, tiny_vae.moments


def _reference_grad(key, num_samples=2):
  def neg_elbo(p):
    concentration, rate = MODEL.encode(p["encoder"], X)
    shape = (X.shape[0], num_samples, MODEL.num_latents)
    z = distrax.Gamma(jnp.broadcast_to(concentration[:, None], shape),
                      jnp.broadcast_to(rate[:, None], shape)).sample(seed=key)
    log_lik = losses.bernoulli_log_likelihood(
        MODEL.decode(p["decoder"], z), X[:, None])
    return jnp.mean(MODEL.kl(concentration, rate) - jnp.mean(log_lik, axis=1))
  return jax.grad(neg_elbo)(PARAMS)


@functools.cache
def _reference_moments():
  return _moments(_reference_grad, seed=1)


@pytest.mark.parametrize("encoder_grad", gamma.ENCODER_GRADS)
def test_every_encoder_grad_is_unbiased(encoder_grad):
  exact = _reference_moments()
  # The checked encoder gradient is many standard errors from zero.
  mean = np.asarray(exact.mean["enc_out"]["bias"])
  se = np.sqrt(np.asarray(exact.variance["enc_out"]["bias"]) / NUM_REPEATS)
  assert np.max(np.abs(mean) / se) > 8
  moments = _moments(lambda key: gamma.gamma_grads(
      MODEL, PARAMS, X, key, encoder_grad=encoder_grad, num_samples=2,
      shape_augmentation=1)[0], seed=2)
  for name in exact.mean:
    for leaf in exact.mean[name]:
      diff = np.asarray(moments.mean[name][leaf] - exact.mean[name][leaf])
      se = np.sqrt(np.asarray(moments.variance[name][leaf]
                              + exact.variance[name][leaf]) / NUM_REPEATS)
      assert np.all(np.abs(diff) <= 5 * se + 1e-6), (
          name, leaf, np.max(np.abs(diff) / (se + 1e-12)))


def test_log_weights_match_the_closed_form_kl():
  params = {"encoder": PARAMS["encoder"],
            "decoder": jax.tree.map(jnp.zeros_like, PARAMS["decoder"])}
  num_samples = 20_000
  log_w = np.asarray(jax.jit(lambda p, k: MODEL.log_weights(
      p, X, k, num_samples=num_samples))(params, jax.random.key(5)),
                     np.float64)
  assert np.all(np.isfinite(log_w))
  concentration, rate = MODEL.encode(params["encoder"], X)
  exact = -784 * math.log(2.0) - np.asarray(MODEL.kl(concentration, rate))
  se = log_w.std(axis=1, ddof=1) / math.sqrt(num_samples)
  assert np.all(np.abs(log_w.mean(axis=1) - exact) <= 5 * se), (
      log_w.mean(axis=1), exact, se)
  # The KL is not negligible against that standard error.
  assert np.all(np.asarray(MODEL.kl(concentration, rate)) > 20 * se)


def test_log_weights_are_finite_when_samples_underflow():
  """Shapes of 0.01 give z = 0 in float32; log-space densities stay finite."""
  model = gamma.GammaVAE(hidden=(4,), num_latents=2, prior_concentration=0.3,
                         prior_rate=0.3)
  params = model.init(jax.random.key(0))
  bias = params["encoder"]["Dense_1"]["bias"]
  # softplus(-4.6) ~ 0.01: the encoder's shapes (first half) become tiny.
  params["encoder"]["Dense_1"]["kernel"] = jnp.zeros_like(
      params["encoder"]["Dense_1"]["kernel"])
  params["encoder"]["Dense_1"]["bias"] = bias.at[:2].set(-4.6)
  concentration, _ = model.encode(params["encoder"], X)
  np.testing.assert_allclose(concentration, 0.01, rtol=0.01)
  def sample_and_weigh(p, key):
    z = model.sample_posterior(key, *model.encode(p["encoder"], X), 200)
    return z, model.log_weights(p, X, key, num_samples=200)

  z, log_w = jax.jit(sample_and_weigh)(params, jax.random.key(1))
  assert np.mean(np.asarray(z) == 0.0) > 0.1  # Underflow does happen.
  assert np.all(np.isfinite(np.asarray(log_w)))


def test_encoder_grad_variance_is_the_trace_of_the_covariance():
  scales = jnp.array([1.0, 2.0, 3.0])
  num_repeats = 4000
  trace = float(gradients.encoder_grad_variance(
      lambda k: {"w": jax.random.normal(k, (3,)) * scales},
      jax.random.key(0), num_repeats=num_repeats))
  exact = float(jnp.sum(scales**2))
  # Var of a sample variance of N(0, s^2) is 2 s^4 / (R - 1).
  se = math.sqrt(float(jnp.sum(2 * scales**4)) / (num_repeats - 1))
  assert abs(trace - exact) <= 5 * se


def test_the_score_function_has_a_larger_encoder_variance():
  """The claim the eval.csv column shows: same batch, same keys."""
  def variance(encoder_grad):
    return float(jax.jit(lambda k: gradients.encoder_grad_variance(
        lambda kk: gamma.gamma_grads(
            MODEL, PARAMS, X, kk, encoder_grad=encoder_grad, num_samples=2,
            shape_augmentation=1)[0]["encoder"], k, num_repeats=256))(
                jax.random.key(7)))
  assert variance("score_function") > 3 * variance("implicit")


def test_an_unknown_encoder_grad_is_refused():
  with pytest.raises(ValueError, match=r"one of .*'implicit'.*got 'pathwise'"):
    gamma.gamma_grads(MODEL, PARAMS, X, jax.random.key(0),
                      encoder_grad="pathwise", num_samples=2,
                      shape_augmentation=1)


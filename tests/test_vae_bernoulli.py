"""The Bernoulli VAE (vae/bernoulli.py): unbiased estimators, training, prior.

Oracles:
* A tiny model (3 Bernoulli latents, so 8 configurations b) whose -ELBO,
      mean over digits of sum_b q(b | x) [log q(b | x) - log p(x | b)
                                          - log p(b)],
  is a finite sum; its gradient in every parameter (encoder, decoder and the
  learned prior logits) is jax.grad of that sum. The score-function, ARM,
  DisARM, REBAR and RELAX estimates (encoder gradient through jax.vjp,
  decoder and prior gradient at a sample) must match it within 5 standard
  errors, and so must VIMCO's against the exact gradient of -E[L_K],
  K = 2, enumerated over the 64 pairs of configurations.
* Every estimator, trained a few steps on the tiny config, lowers the test
  bound far below its value at initialisation (an untrained decoder
  predicts about 1/2 per pixel: 784 log 2 = 543 nats).
* The prior logits are learned: their exact gradient is the batch mean of
  sigmoid(prior) - q(b = 1 | x), so training moves sigmoid(prior) towards
  the encoder's average posterior probability of each latent.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import estimators
from launch.configs import vae as vae_config
from vae import bernoulli
from vae import data as vae_data
from vae import losses
from vae import train as vae_train

UNBIASED = ("score_function", "arm", "disarm", "rebar", "relax", "vimco")


def _config(estimator, **overrides):
  config = vae_config.get_config("test")
  config.model = "bernoulli"
  config.estimator = estimator
  config.num_samples = 1 if estimator in ("rebar", "relax") else 2
  for key, value in overrides.items():
    config[key] = value
  return config


def _tiny(estimator):
  return _config(estimator, num_latents=3, hidden=(4,),
                 architecture="nonlinear", relax_hidden=4)


def _state(config, seed=0):
  model = vae_train.make_model(config)
  return model, vae_train.init_state(model, config, jax.random.key(seed),
                                     optax.adam(1.0), optax.adam(1.0))


def _batch():
  return vae_data.load_mnist(seed=0, num_train=10, num_test=10).test[:3]


def _configs(num_latents):
  return jnp.array(list(itertools.product((0.0, 1.0), repeat=num_latents)))


def _log_w_table(model, params, x):
  """log p(x, b) - log q(b | x) and log q(b | x) for every b, [C, B]."""
  b = _configs(model.num_latents)[:, None]  # [C, 1, L]
  logits = model.encode(params["encoder"], x)  # [B, L]
  log_q = bernoulli.bernoulli_log_prob(b, logits)
  return model.log_joint(params, x, b) - log_q, log_q


def _exact_neg_elbo(params, model, x):
  log_w, log_q = _log_w_table(model, params, x)
  return -jnp.mean(jnp.sum(jnp.exp(log_q) * log_w, axis=0))


def _exact_neg_bound_2(params, model, x):
  """-E[L_2], L_2 = log (w_1 + w_2) / 2 over all pairs of configurations."""
  log_w, log_q = _log_w_table(model, params, x)
  pairs = jnp.array(list(itertools.product(range(len(log_w)), repeat=2)))
  prob = jnp.exp(log_q[pairs[:, 0]] + log_q[pairs[:, 1]])  # [C^2, B]
  bound = jnp.logaddexp(log_w[pairs[:, 0]], log_w[pairs[:, 1]]) - math.log(2)
  return -jnp.mean(jnp.sum(prob * bound, axis=0))


def _checked(grads):
  """The encoder's output layer, the decoder's first layer, the prior."""
  return {"enc_out": grads["encoder"]["Dense_1"],
          "dec_in": grads["decoder"]["Dense_0"], "prior": grads["prior"]}


@pytest.mark.parametrize("estimator", UNBIASED)
def test_estimators_are_unbiased_against_enumeration(estimator):
  config = _tiny(estimator)
  model, state = _state(config)
  # A prior away from the initial 1/2, so that its gradient is not small.
  params = {**state.params, "prior": jnp.array([1.5, -1.0, 0.5])}
  x = _batch()
  exact_fn = _exact_neg_bound_2 if estimator == "vimco" else _exact_neg_elbo
  exact = _checked(jax.grad(exact_fn)(params, model, x))
  grad_fn = vae_train.make_grad_fn(model, config)
  num_repeats = 600
  moments = jax.jit(lambda k: estimators.grad_moments(
      lambda kk: _checked(grad_fn(params, state.cv_params, x, kk,
                                  jnp.int32(0))[0]),
      k, num_repeats=num_repeats))(jax.random.key(1))
  z_max = {}
  for name in exact:
    for leaf, target in jax.tree_util.tree_leaves_with_path(exact[name]):
      mean = np.asarray(_at(moments.mean[name], leaf))
      se = np.sqrt(np.asarray(_at(moments.variance[name], leaf))
                   / num_repeats)
      z = np.abs(mean - np.asarray(target)) / (se + 1e-12)
      assert np.all(np.abs(mean - target) <= 5 * se + 1e-6), (
          name, leaf, float(z.max()))
      z_max[name] = max(z_max.get(name, 0.0),
                        float(np.max(np.abs(target) / (se + 1e-12))))
  # The checked gradients are not negligible against their standard error.
  assert z_max["enc_out"] > 8 and z_max["prior"] > 8, z_max


def _at(tree, path):
  for key in path:
    tree = tree[getattr(key, "key", getattr(key, "idx", None))]
  return tree


@functools.cache
def _training(estimator):
  """(model, fresh state, test digits, jitted chunk of 30 updates)."""
  config = _config(estimator, learning_rate=3e-2)
  model = vae_train.make_model(config)
  digits = vae_data.load_mnist(seed=0, num_train=config.num_train,
                               num_test=config.num_test)
  chunk = vae_train.make_train_chunk(model, config, jax.random.key(1),
                                     digits.train, length=30)
  return model, lambda: _state(config)[1], digits, chunk


@functools.partial(jax.jit, static_argnums=0)
def _test_bound(model, params, test):
  """-L_2 on the test digits (one compilation for every estimator)."""
  log_w = model.log_weights(params, test, jax.random.key(2), num_samples=2)
  return -jnp.mean(losses.importance_weighted_bound(log_w))


@pytest.mark.parametrize("estimator", bernoulli.ESTIMATORS)
def test_each_estimator_trains_a_few_steps(estimator):
  model, fresh_state, digits, chunk = _training(estimator)
  state = fresh_state()
  before = float(_test_bound(model, state.params, digits.test))
  cv_before = jax.tree.map(np.array, state.cv_params)  # The chunk donates.
  state, metrics = chunk(state)
  assert int(state.step) == 30
  assert np.isfinite(float(metrics["train_loss"]))
  after = float(_test_bound(model, state.params, digits.test))
  assert before > 500 and after < before - 100, (before, after)
  if estimator in ("rebar", "relax"):  # The control variate is trained too.
    moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                         cv_before, state.cv_params)
    assert all(jax.tree.leaves(moved)), moved


def test_the_prior_is_learned():
  model, fresh_state, digits, chunk = _training("disarm")
  state = fresh_state()
  for _ in range(7):
    state, _ = chunk(state)
  prior = jax.nn.sigmoid(state.params["prior"])
  posterior = jnp.mean(jax.nn.sigmoid(
      model.encode(state.params["encoder"], digits.train)), axis=0)
  gap_learned = float(jnp.mean(jnp.abs(prior - posterior)))
  gap_uniform = float(jnp.mean(jnp.abs(0.5 - posterior)))  # Initial prior.
  # The posterior left 1/2, and the prior followed it.
  assert gap_uniform > 0.1, gap_uniform
  assert gap_learned < 0.3 * gap_uniform, (gap_learned, gap_uniform)


def test_kl_and_log_prob_match_their_definitions():
  q, p = jnp.array([0.3, -2.0]), jnp.array([1.0, 0.5])
  sq, sp = jax.nn.sigmoid(q), jax.nn.sigmoid(p)
  kl = jnp.sum(sq * jnp.log(sq / sp) + (1 - sq) * jnp.log((1 - sq) / (1 - sp)))
  np.testing.assert_allclose(bernoulli.bernoulli_kl(q, p), kl, rtol=1e-5)
  b = jnp.array([1.0, 0.0])
  np.testing.assert_allclose(bernoulli.bernoulli_log_prob(b, p),
                             jnp.log(sp[0]) + jnp.log(1 - sp[1]), rtol=1e-6)
  # The KL is the expectation of log q - log p over q (4 configurations).
  configs = _configs(2)
  log_q = bernoulli.bernoulli_log_prob(configs, q)
  expected = jnp.sum(jnp.exp(log_q) * (
      log_q - bernoulli.bernoulli_log_prob(configs, p)))
  np.testing.assert_allclose(bernoulli.bernoulli_kl(q, p), expected,
                             rtol=1e-5)


@pytest.mark.parametrize("estimator,samples", [
    ("score_function", 2), ("score_function", 3), ("arm", 2), ("disarm", 2),
    ("rebar", 1), ("relax", 1), ("vimco", 2), ("vimco", 3),
    ("gumbel_softmax", 2), ("st_gumbel_softmax", 3)])
def test_decoder_evaluations_count_the_latents_the_step_decodes(
    monkeypatch, estimator, samples):
  """`decoder_evaluations` against the latents passed to the decoder while
  one digit's gradient is traced (autodiff adds backward passes only).

  The estimators of `common.estimators` vmap over their draws, which hides
  the draw axis from the traced shapes, so ARM, DisARM, REBAR and RELAX are
  counted at one draw (the `bernoulli_estimators` study's setting); the
  others at two and three samples.
  """
  config = _tiny(estimator)
  config.num_samples = samples
  model, state = _state(config)
  rows = []
  decode = bernoulli.BernoulliVAE.decode

  def counting(self, decoder_params, b):
    rows.append(int(np.prod(b.shape[:-1])))
    return decode(self, decoder_params, b)

  monkeypatch.setattr(bernoulli.BernoulliVAE, "decode", counting)
  grad_fn = bernoulli.make_grad_fn(model, config, lambda step: 1.0)
  jax.eval_shape(grad_fn, state.params, state.cv_params, _batch()[:1],
                 jax.random.key(0), 0)
  assert sum(rows) == bernoulli.decoder_evaluations(estimator, samples)


def test_decoder_evaluations_refuse_bad_input():
  with pytest.raises(ValueError, match="estimator must be one of .*'nope'"):
    bernoulli.decoder_evaluations("nope", 2)
  with pytest.raises(ValueError, match="num_samples must be a positive int; "
                     "got 0"):
    bernoulli.decoder_evaluations("arm", 0)

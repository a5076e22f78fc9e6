"""The Gaussian VAE on the K-sample bound (vae/iwae.py) is trained on
unbiased gradients, and its study is well formed.

Oracles (a tiny VAE, 2 latents, 3 digits; means within 5 standard errors
computed from the draws):
  * The gradient of the batch-mean -L_K obtained by differentiating the
    Monte-Carlo bound log (1/K) sum_k w_k through reparameterized samples
    (`models.GaussianVAE.log_weights`, one batched jax.grad: Burda et al.
    2016's standard gradient, written independently of `iwae_grad`). The
    "iwae" and "dreg" estimates must match its mean at K = 4 (both are
    unbiased, Tucker et al. 2019).
  * K = 1: L_1 is the ELBO, whose pathwise gradient with the analytic KL
    (`gradients.gaussian_grads`, the K = 1 training) all three estimators
    ("stl" included: its dropped score term has mean zero) must match.
  * The decoder gradient does not depend on the estimator.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch import studies
from launch import study_runner
from vae import gradients
from vae import iwae
from vae import losses
from vae import train as vae_train
import tiny_vae

NUM_REPEATS = tiny_vae.NUM_REPEATS
MODEL, PARAMS, X = tiny_vae.setup()
_checked, _moments = tiny_vae.checked, tiny_vae.moments


def _iwae_moments(estimator, k, seed=1):
  return _moments(lambda key: iwae.gaussian_iwae_grads(
      MODEL, PARAMS, X, key, num_importance_samples=k, num_samples=1,
      estimator=estimator)[0], seed)


def _assert_same_mean(a, b):
  for name in a.mean:
    for leaf in a.mean[name]:
      diff = np.asarray(a.mean[name][leaf] - b.mean[name][leaf])
      se = np.sqrt(np.asarray(a.variance[name][leaf]
                              + b.variance[name][leaf]) / NUM_REPEATS)
      assert np.all(np.abs(diff) <= 5 * se + 1e-6), (
          name, leaf, np.max(np.abs(diff) / (se + 1e-12)))


def _assert_not_negligible(moments):
  """The checked encoder gradient is many standard errors from zero."""
  mean = np.asarray(moments.mean["enc_out"]["bias"])
  se = np.sqrt(np.asarray(moments.variance["enc_out"]["bias"]) / NUM_REPEATS)
  assert np.max(np.abs(mean) / se) > 8


@functools.cache
def _bound_gradient_moments(k):
  """Moments of the gradient of -L_K through the batched bound."""
  def reference(key):
    def neg_bound(p):
      return -jnp.mean(losses.importance_weighted_bound(
          MODEL.log_weights(p, X, key, num_samples=k)))
    return jax.grad(neg_bound)(PARAMS)
  return _moments(reference, seed=2)


@functools.cache
def _elbo_gradient_moments():
  """Moments of the K = 1 training gradient (analytic KL)."""
  return _moments(lambda key: gradients.gaussian_grads(
      MODEL, PARAMS, X, key, encoder_grad="pathwise", num_samples=1)[0],
      seed=3)


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
def test_k4_gradients_are_unbiased_for_the_iwae_bound(estimator):
  exact = _bound_gradient_moments(4)
  _assert_not_negligible(exact)
  _assert_same_mean(_iwae_moments(estimator, 4), exact)


@pytest.mark.parametrize("estimator", ["iwae", "stl", "dreg"])
def test_k1_gradients_are_the_elbo_gradient(estimator):
  elbo = _elbo_gradient_moments()
  _assert_not_negligible(elbo)
  _assert_same_mean(_iwae_moments(estimator, 1), elbo)


def test_the_decoder_gradient_and_the_bound_do_not_depend_on_the_estimator():
  key = jax.random.key(4)
  outs = jax.jit(lambda k: {e: iwae.gaussian_iwae_grads(
      MODEL, PARAMS, X, k, num_importance_samples=3, num_samples=2,
      estimator=e) for e in iwae.ESTIMATORS})(key)
  for e in ("stl", "dreg"):
    jax.tree.map(np.testing.assert_array_equal, outs[e][0]["decoder"],
                 outs["iwae"][0]["decoder"])
    np.testing.assert_allclose(outs[e][1], outs["iwae"][1], rtol=1e-6)
  # The encoder gradients differ (the estimators are not the same).
  assert not np.allclose(outs["dreg"][0]["encoder"]["Dense_1"]["bias"],
                         outs["iwae"][0]["encoder"]["Dense_1"]["bias"])


def test_an_unknown_estimator_is_refused():
  with pytest.raises(ValueError, match=r"one of .*'dreg'.*got 'vimco'"):
    iwae.gaussian_iwae_grads(MODEL, PARAMS, X, jax.random.key(0),
                             num_importance_samples=2, num_samples=1,
                             estimator="vimco")


@pytest.mark.parametrize("quick", [True, False])
def test_iwae_estimators_study_cells_pass_the_trainers_checks(quick):
  study = studies.get_study("iwae_estimators")
  settings = study_runner.resolve_settings(study, seeds=None, steps=None,
                                           quick=quick)
  cells = study_runner.study_cells(study, settings)
  assert len(cells) == 2 * 3  # iwae and dreg, 3 seeds.
  for cell in cells:
    config = study_runner.cell_config(study, cell, settings)
    vae_train.check_config(config)
    assert config.num_importance_samples == 16
    assert vae_train.eval_columns(config) == iwae.EVAL_COLUMNS
    for field, value in cell.condition.overrides:
      assert config[field] == value
  metrics = [m.column for m in study.system.metrics
             if m.source == "eval.csv"]
  assert set(metrics) <= set(iwae.EVAL_COLUMNS)
  per_run = [m.column for m in study.system.metrics
             if m.source == "final.json"]
  assert per_run == ["test_log_px_iw"]  # vae.train.final_evaluation's key.

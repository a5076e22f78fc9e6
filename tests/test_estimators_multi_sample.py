"""Statistical tests of iwae_grad (common/_estimators/multi_sample.py).

Model: p(z) = N(0, 1), p(x | z) = N(z + b, 1) with one observation x and a
model parameter b (b = 0 in the oracles below), q(z) = N(mu, sigma^2).
Oracles:
  * The posterior is N((x - b) / 2, 1/2), and log p(x) = log N(x; b, 2).
  * K = 1 (the ELBO): with log p(x, z) = -z^2/2 - (x - b - z)^2/2 - log 2 pi
    and the entropy log sigma + const,
        dELBO/dmu = x - b - 2 mu,  dELBO/dsigma = 1/sigma - 2 sigma,
        dELBO/db  = x - b - mu.
    All three estimators ("iwae", "stl", "dreg") are unbiased for it.
  * At q = posterior, log w = log p(x) for every z, so the bound equals
    log p(x) exactly and the "stl" and "dreg" variational gradients are 0 on
    every draw (float32 rounding aside); "iwae" keeps its score term.
  * K > 1: "dreg" and "iwae" have the same expectation (Tucker et al. 2019);
    their paired difference on common draws has mean 0. "stl" does not
    (Tucker et al. 2019, Sec. 3): its K = 64 mean differs from theirs.
  * Signal-to-noise ratio |mean| / std of the mu-gradient (Rainforth et al.
    2018): that of "iwae" falls from K = 1 to K = 64; that of "dreg" does not.
Means are compared within 5 standard errors computed from the draws.
"""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E
from monte_carlo_checks import assert_mean_close

X = 1.4
Q = {"mu": 0.3, "sigma": 1.0}  # Not the posterior N(0.7, 0.5).
POSTERIOR = {"mu": X / 2, "sigma": float(np.sqrt(0.5))}


def log_joint(model_params, z):
  return (distrax.Normal(0.0, 1.0).log_prob(z)
          + distrax.Normal(z + model_params["b"], 1.0).log_prob(X))


def dist_fn(variational_params):
  return distrax.Normal(variational_params["mu"], variational_params["sigma"])


def draws(estimator, num_samples, variational_params, num_repeats, seed=0):
  """[R] bounds and gradient leaves for independent keys (jit + vmap)."""
  phi = jax.tree.map(jnp.float32, variational_params)
  one = lambda key: E.iwae_grad(log_joint, dist_fn, {"b": jnp.float32(0.0)},
                                phi, key, num_samples=num_samples,
                                estimator=estimator)
  keys = jax.random.split(jax.random.key(seed), num_repeats)
  return jax.tree.map(lambda x: np.asarray(x, np.float64),
                      jax.jit(jax.vmap(one))(keys))


def snr(samples):
  return abs(samples.mean()) / samples.std(ddof=1)


@pytest.mark.parametrize("estimator", ["iwae", "stl", "dreg"])
def test_k1_is_the_elbo_gradient(estimator):
  _, g_model, g_q = draws(estimator, 1, Q, 40_000)
  mu, sigma = Q["mu"], Q["sigma"]
  assert_mean_close(g_q["mu"], X - 2 * mu)
  assert_mean_close(g_q["sigma"], 1 / sigma - 2 * sigma)
  assert_mean_close(g_model["b"], X - mu)


def test_at_the_posterior_stl_and_dreg_are_zero_on_every_draw():
  log_px = -0.25 * X**2 - 0.5 * np.log(4 * np.pi)  # log N(x; 0, 2).
  for num_samples in (1, 8):
    for estimator in ("stl", "dreg"):
      bound, _, g_q = draws(estimator, num_samples, POSTERIOR, 16, seed=1)
      np.testing.assert_allclose(bound, log_px, rtol=1e-5)
      for leaf in g_q.values():
        np.testing.assert_allclose(leaf, 0.0, atol=1e-5)
    _, _, g_iwae = draws("iwae", num_samples, POSTERIOR, 16, seed=1)
    assert np.abs(g_iwae["sigma"]).max() > 0.1  # The score term remains.


def test_dreg_agrees_with_iwae_at_k8_and_stl_is_biased_at_k64():
  iwae, dreg = (draws(name, 8, Q, 20_000, seed=2) for name in ("iwae", "dreg"))
  np.testing.assert_array_equal(iwae[0], dreg[0])  # Same bound, same draws.
  chex.assert_trees_all_close(iwae[1], dreg[1], rtol=1e-6)  # Model gradient.
  for name in ("mu", "sigma"):
    assert_mean_close(dreg[2][name] - iwae[2][name], 0.0)  # Paired.
  stl64, dreg64 = (draws(name, 64, Q, 2_000, seed=3)
                   for name in ("stl", "dreg"))
  diff = stl64[2]["mu"] - dreg64[2]["mu"]
  assert abs(diff.mean()) > 20 * diff.std(ddof=1) / np.sqrt(diff.size)


def test_signal_to_noise_ratio_of_the_encoder_gradient():
  r = 10_000
  snrs = {(name, k): snr(draws(name, k, Q, r, seed=4)[2]["mu"])
          for name in ("iwae", "dreg") for k in (1, 64)}
  # Measured: iwae 0.40 -> 0.04, dreg 0.80 -> 3.6 (K = 1 -> 64).
  assert snrs["iwae", 64] < 0.25 * snrs["iwae", 1], snrs
  assert snrs["dreg", 64] > snrs["dreg", 1], snrs


def test_vector_latent_and_jit_has_one_trace():
  """A 3-d latent (batch shape summed in log q), one trace for many keys."""
  x = jnp.array([0.5, -1.0, 2.0])
  joint = lambda theta, z: jnp.sum(distrax.Normal(0.0, 1.0).log_prob(z)
                                   + distrax.Normal(z + theta, 1.0).log_prob(x))
  phi = {"mu": x / 2, "sigma": jnp.full(3, np.sqrt(0.5), jnp.float32)}
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key):
    return E.iwae_grad(joint, dist_fn, jnp.float32(0.0), phi, key,
                       num_samples=4, estimator="dreg")

  for seed in range(3):
    bound, g_theta, g_q = run(jax.random.key(seed))
    # q is the posterior of each coordinate: log p(x) = sum log N(x_i; 0, 2).
    np.testing.assert_allclose(
        bound, np.sum(-0.25 * np.asarray(x) ** 2 - 0.5 * np.log(4 * np.pi)),
        rtol=1e-5)
    np.testing.assert_allclose(g_q["mu"], 0.0, atol=1e-5)
    assert g_theta.shape == ()


def test_bad_inputs_raise_clear_errors():
  key, theta = jax.random.key(0), {"b": 0.0}
  with pytest.raises(ValueError, match=r"estimator must be one of \['iwae', "
                     r"'stl', 'dreg'\]; got estimator='vimco'"):
    E.iwae_grad(log_joint, dist_fn, theta, Q, key, num_samples=2,
                estimator="vimco")
  with pytest.raises(TypeError, match="estimator must be a string.*got None"):
    E.iwae_grad(log_joint, dist_fn, theta, Q, key, num_samples=2,
                estimator=None)
  with pytest.raises(ValueError, match="num_samples=0"):
    E.iwae_grad(log_joint, dist_fn, theta, Q, key, num_samples=0,
                estimator="iwae")
  with pytest.raises(TypeError, match="Categorical gives samples of dtype "
                     "int32"):
    E.iwae_grad(lambda t, z: 0.0, lambda p: distrax.Categorical(logits=p),
                theta, jnp.zeros(3), key, num_samples=2, estimator="iwae")
  with pytest.raises(ValueError, match=r"log_joint\(model_params, z\) must "
                     r"return a scalar; got output of shape \(2,\)"):
    E.iwae_grad(lambda t, z: jnp.stack([z, z]), dist_fn, theta, Q, key,
                num_samples=2, estimator="stl")

"""Statistical tests of measure_valued_grad (common/_estimators/measure_valued).

Oracles, for x ~ N(mu, sigma^2) per coordinate, in closed form:
  f = x^2:       E = mu^2 + sigma^2;       d/dmu = 2 mu,  d/dsigma = 2 sigma.
  f = sin x:     E = sin(mu) e^{-sigma^2/2};
                 d/dmu = cos(mu) e^{-sigma^2/2},
                 d/dsigma = -sigma sin(mu) e^{-sigma^2/2}.
  f = prod_i sin x_i (3 coordinates, non-separable): E = prod_i s_i with
                 s_i = sin(mu_i) e^{-sigma_i^2/2}; d/dmu_i and d/dsigma_i are
                 the one-dimensional derivatives times prod_{j != i} s_j.
  f = 1(x > 0):  E = Phi(mu / sigma);      d/dmu = phi(mu / sigma) / sigma,
                 d/dsigma = -mu / sigma^2 phi(mu / sigma).
The pathwise gradient of the step function is exactly 0 on every draw (its
derivative is 0 almost everywhere), although the true gradient is not.

Exact per-sample variances for f = x (any mu, sigma): the mean estimate is
2 W / sqrt(2 pi) with W ~ Rayleigh(1), mean 1 and variance
4 Var(W) / (2 pi) = (4 - pi) / pi; the scale estimate is M - N with M
double-sided Maxwell (E M^2 = 3): variance 3 + 1 = 4 with independent
N ~ N(0, 1), and with coupling N = U M it is M (1 - U), variance
3 E[(1 - U)^2] = 1.

Means are compared within 5 standard errors computed from the draws, sample
variances within 5 standard errors sqrt((m4 - s^4) / n).
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from common import estimators as E
from monte_carlo_checks import assert_variance_close
from monte_carlo_checks import assert_mean_close as assert_means_close

R = 50_000


def gaussian_sin(mu, sigma):
  s = np.sin(mu) * np.exp(-sigma**2 / 2)
  ds_dmu = np.cos(mu) * np.exp(-sigma**2 / 2)
  ds_dsigma = -sigma * s
  return s, ds_dmu, ds_dsigma


def step(x):
  return jnp.sum((x > 0).astype(jnp.float32))


SEPARABLE_MU = np.array([0.5, -1.0, 2.0])
SEPARABLE_SIGMA = np.array([1.3, 0.4, 1.0])
PRODUCT_MU = np.array([0.7, -0.4, 1.2])
PRODUCT_SIGMA = np.array([0.5, 1.0, 0.8])
IDENTITY_MU, IDENTITY_SIGMA = np.array([0.3]), np.array([2.0])

SEPARABLE = {"square": lambda x: jnp.sum(x**2),
             "sin": lambda x: jnp.sum(jnp.sin(x)),
             "step": step}


def _specs():
  """name -> (f, mu, sigma, coupling) for every draw used below."""
  specs = {}
  for coupling in (True, False):
    for name, f in SEPARABLE.items():
      specs[name, coupling] = (f, SEPARABLE_MU, SEPARABLE_SIGMA, coupling)
    specs["identity", coupling] = (jnp.sum, IDENTITY_MU, IDENTITY_SIGMA,
                                   coupling)
  specs["product", True] = (lambda x: jnp.prod(jnp.sin(x)), PRODUCT_MU,
                            PRODUCT_SIGMA, True)
  return specs


@functools.cache
def mvd_draws():
  """R one-sample estimates for every spec, from one jitted program (one
  compilation; each spec uses its own independent keys)."""
  specs = _specs()

  def one(key):
    keys = jax.random.split(key, len(specs))
    return {name: E.measure_valued_grad(
        f, jnp.float32(mu), jnp.float32(sigma), k, num_samples=1,
        coupling=coupling)
            for (name, (f, mu, sigma, coupling)), k in zip(specs.items(), keys)}

  keys = jax.random.split(jax.random.key(0), R)
  out = jax.jit(jax.vmap(one))(keys)
  return jax.tree.map(lambda x: np.asarray(x, np.float64), out)


@pytest.mark.parametrize("coupling", [True, False])
def test_unbiased_on_separable_functions(coupling):
  """x^2, sin x and the step, each on three coordinates (summed)."""
  mu, sigma = SEPARABLE_MU, SEPARABLE_SIGMA
  phi = stats.norm.pdf(mu / sigma)
  exact = {"square": (2 * mu, 2 * sigma),
           "sin": gaussian_sin(mu, sigma)[1:],
           "step": (phi / sigma, -mu / sigma**2 * phi)}
  for name, (exact_mu, exact_sigma) in exact.items():
    g_mu, g_sigma = mvd_draws()[name, coupling]
    assert_means_close(g_mu, exact_mu)
    assert_means_close(g_sigma, exact_sigma)


def test_unbiased_on_a_non_separable_product():
  s, ds_dmu, ds_dsigma = gaussian_sin(PRODUCT_MU, PRODUCT_SIGMA)
  others = np.array([np.prod(np.delete(s, i)) for i in range(3)])
  g_mu, g_sigma = mvd_draws()["product", True]
  assert_means_close(g_mu, ds_dmu * others)
  assert_means_close(g_sigma, ds_dsigma * others)


def test_step_function_pathwise_is_zero_and_measure_valued_is_right():
  mu, sigma = SEPARABLE_MU[0], SEPARABLE_SIGMA[0]
  params = {"mu": jnp.float32(mu), "sigma": jnp.float32(sigma)}
  dist_fn = lambda p: distrax.Normal(p["mu"], p["sigma"])
  scalar_step = lambda x: (x > 0).astype(jnp.float32)
  pathwise = jax.jit(jax.vmap(lambda key: E.pathwise_grad(
      scalar_step, dist_fn, params, key, num_samples=4)))(
          jax.random.split(jax.random.key(2), 1000))
  np.testing.assert_array_equal(pathwise["mu"], 0.0)
  np.testing.assert_array_equal(pathwise["sigma"], 0.0)
  # Coordinate 0 of the separable step draws: x_0 ~ N(0.5, 1.3^2).
  g_mu, g_sigma = (g[:, 0] for g in mvd_draws()["step", True])
  phi = stats.norm.pdf(mu / sigma)
  assert phi / sigma > 0.2  # Far from the pathwise 0 (SE ~ 4e-4).
  assert_means_close(g_mu[:, None], [phi / sigma])
  assert_means_close(g_sigma[:, None], [-mu / sigma**2 * phi])


def test_exact_variances_for_the_identity_and_coupling():
  for coupling, exact_scale_variance in ((True, 1.0), (False, 4.0)):
    g_mu, g_sigma = mvd_draws()["identity", coupling]
    assert_means_close(g_mu, [1.0])
    assert_variance_close(g_mu[:, 0], (4 - np.pi) / np.pi)
    assert_means_close(g_sigma, [0.0])
    assert_variance_close(g_sigma[:, 0], exact_scale_variance)


def test_never_differentiates_f_and_matrix_shapes():
  @jax.custom_jvp
  def trap(x):
    return jnp.sum(x**2)

  @trap.defjvp
  def _trap_jvp(primals, tangents):
    raise AssertionError("measure_valued_grad differentiated f")

  mu, sigma = jnp.zeros((2, 3)), jnp.ones((2, 3))
  g_mu, g_sigma = jax.jit(lambda key: E.measure_valued_grad(
      trap, mu, sigma, key, num_samples=5))(jax.random.key(0))
  assert g_mu.shape == g_sigma.shape == (2, 3)
  assert np.all(np.isfinite(g_mu)) and np.all(np.isfinite(g_sigma))


def test_bad_inputs_raise_clear_errors():
  key, mu, sigma = jax.random.key(0), jnp.zeros(2), jnp.ones(2)
  with pytest.raises(ValueError, match=r"scale must be > 0 everywhere; got "
                     r"scale=\[1.0, 0.0\]"):
    E.measure_valued_grad(step, mu, jnp.array([1.0, 0.0]), key, num_samples=1)
  with pytest.raises(ValueError, match=r"mean, scale must have the same "
                     r"shape.*\(2,\).*\(3,\)"):
    E.measure_valued_grad(step, mu, jnp.ones(3), key, num_samples=1)
  with pytest.raises(TypeError, match="mean must have a floating dtype"):
    E.measure_valued_grad(step, jnp.zeros(2, jnp.int32), sigma, key,
                          num_samples=1)
  with pytest.raises(TypeError, match="coupling must be a Python bool.*got "
                     "'yes'"):
    E.measure_valued_grad(step, mu, sigma, key, num_samples=1,
                          coupling="yes")
  with pytest.raises(ValueError, match="num_samples=0"):
    E.measure_valued_grad(step, mu, sigma, key, num_samples=0)
  with pytest.raises(ValueError, match=r"f must return a scalar for each "
                     r"sample; got per-sample output of shape \(2,\)"):
    jax.eval_shape(lambda k: E.measure_valued_grad(
        lambda x: x, mu, sigma, k, num_samples=1), key)

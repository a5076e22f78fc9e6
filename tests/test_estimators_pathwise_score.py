"""Statistical tests of the pathwise and score-function estimators
(common/_estimators/pathwise_score.py).

Monte-Carlo means are compared with exact gradients, and per-sample variances
with exact variances, each within 5 standard errors computed from the samples
themselves (never a fixed loose constant): the SE of a mean is the sample
std / sqrt(n), and the SE of a sample variance comes from the fourth central
moment, Var(s^2) ~= (m4 - s^4) / n. Seeds are fixed, so every test is
deterministic.

Oracle: Gaussian x ~ N(mu, sigma^2), f(x) = (x - k)^2, d = mu - k.
  E f = d^2 + sigma^2, so the exact gradient is
      d/dmu = 2 d,   d/dsigma = 2 sigma.
  Exact per-sample (S = 1) variances of the estimates:
      pathwise:                      mu: 4 sigma^2
                                     sigma: 4 d^2 + 8 sigma^2
      score function, no baseline:   mu: d^4/sigma^2 + 14 d^2 + 15 sigma^2
                                     sigma: 2 d^4/sigma^2 + 60 d^2 + 74 sigma^2
      score function, b = E f:       mu: 8 d^2 + 10 sigma^2
                                     sigma: 40 d^2 + 56 sigma^2
  At mu = sigma = 1, k = 0: pathwise 4 (mu) and 12 (sigma); score function
  30 (mu) and 136 (sigma).

Derivation. Write x = mu + sigma eps with eps ~ N(0, 1), so
f = (d + sigma eps)^2, and use E eps^2 = 1, E eps^4 = 3, E eps^6 = 15,
E eps^8 = 105 (odd moments vanish). Each variance is E[g^2] - (E g)^2.
  Pathwise: g_mu = 2 (d + sigma eps) and g_sigma = 2 (d + sigma eps) eps
    = 2 d eps + 2 sigma eps^2; Var(eps^2) = 2 and Cov(eps, eps^2) = 0.
  Score function: the scores of N(mu, sigma^2) are h_mu = eps / sigma and
    h_sigma = (eps^2 - 1) / sigma, and g = (f - b) h. With b = 0, expand
    (d + sigma eps)^4 and take E[(d + sigma eps)^4 eps^2] = d^4 + 18 d^2
    sigma^2 + 15 sigma^4 (mu) and E[(d + sigma eps)^4 (eps^2 - 1)^2] =
    2 d^4 + 60 d^2 sigma^2 + 78 sigma^4 (sigma); divide by sigma^2 and
    subtract (2 d)^2 and (2 sigma)^2. With b = E f, f - b = 2 d sigma eps +
    sigma^2 (eps^2 - 1), so g_mu = 2 d eps^2 + sigma (eps^3 - eps) and
    g_sigma = 2 d eps (eps^2 - 1) + sigma (eps^2 - 1)^2, with
    E[(eps^3 - eps)^2] = 10, E[eps^2 (eps^2 - 1)^2] = 10 and
    E[(eps^2 - 1)^4] = 60.
  The leave-one-out estimator's exact variance is derived in
  `exact_leave_one_out_variance` below.

Also tested: degenerate limits (a constant f with a matching baseline gives
exactly zero; zero noise gives the deterministic gradient); a
`jax.custom_jvp` trap that fails if `score_function_grad` ever differentiates
f; multivariate and tanh-transformed Gaussians (the latter against
quadrature); a Flax parameter tree (equal to a hand-written `jax.grad`);
implicit reparameterization for Gamma (d/dalpha E[x] = 1), Beta and
Dirichlet; the DiCE surrogate's value and gradient; and errors that name the
bad value (TypeError for a wrong type, ValueError for a wrong value).
"""

import functools

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E
from monte_carlo_checks import assert_mean_close, assert_variance_close



def quadratic(k):
  return lambda x: jnp.sum((x - k) ** 2)


def normal_fn(p):
  return distrax.Normal(p["mu"], p["sigma"])


def exact_moments(mu, sigma, k):
  d = mu - k
  return {
      "grad": {"mu": 2 * d, "sigma": 2 * sigma},
      "pathwise": {"mu": 4 * sigma**2, "sigma": 4 * d**2 + 8 * sigma**2},
      "score": {"mu": d**4 / sigma**2 + 14 * d**2 + 15 * sigma**2,
                "sigma": 2 * d**4 / sigma**2 + 60 * d**2 + 74 * sigma**2},
      "score_opt_b": {"mu": 8 * d**2 + 10 * sigma**2,
                      "sigma": 40 * d**2 + 56 * sigma**2},
  }


def per_repeat_grads(grad_fn, key, num_repeats):
  """The R draws that grad_moments summarises (same keys)."""
  return jax.jit(jax.vmap(grad_fn))(jax.random.split(key, num_repeats))


# ---------------------------------------------------------------------------
# Unbiasedness and exact variances, Gaussian, f = (x - k)^2.
# ---------------------------------------------------------------------------


SETTINGS = [(1.0, 1.0, 0.0), (0.5, 2.0, 1.5)]  # (mu, sigma, k)


R = 100_000


@pytest.mark.parametrize("mu,sigma,k", SETTINGS)
def test_pathwise_mean_and_variance_match_exact(mu, sigma, k):
  params = {"mu": mu, "sigma": sigma}
  grad_fn = lambda key: E.pathwise_grad(quadratic(k), normal_fn, params, key,
                                        num_samples=1)
  draws = per_repeat_grads(grad_fn, jax.random.key(0), R)
  exact = exact_moments(mu, sigma, k)
  for name in ("mu", "sigma"):
    assert_mean_close(draws[name], exact["grad"][name])
    assert_variance_close(draws[name], exact["pathwise"][name])


@pytest.mark.parametrize("mu,sigma,k", SETTINGS)
def test_score_function_mean_and_variance_match_exact(mu, sigma, k):
  params = {"mu": mu, "sigma": sigma}
  exact = exact_moments(mu, sigma, k)
  for baseline, variance_key in ((None, "score"),
                                 ((mu - k)**2 + sigma**2, "score_opt_b")):
    grad_fn = lambda key, b=baseline: E.score_function_grad(
        quadratic(k), normal_fn, params, key, num_samples=1, baseline=b)
    draws = per_repeat_grads(grad_fn, jax.random.key(1), R)
    for name in ("mu", "sigma"):
      assert_mean_close(draws[name], exact["grad"][name])
      assert_variance_close(draws[name], exact[variance_key][name])


def test_exact_variances_at_unit_parameters():
  """At mu = sigma = 1, k = 0 the formulas of the module docstring give:

  pathwise mu: 4 sigma^2 = 4; sigma: 4 d^2 + 8 sigma^2 = 12 (d = 1);
  score function mu: d^4/sigma^2 + 14 d^2 + 15 sigma^2 = 1 + 14 + 15 = 30;
  sigma: 2 d^4/sigma^2 + 60 d^2 + 74 sigma^2 = 2 + 60 + 74 = 136.
  """
  exact = exact_moments(1.0, 1.0, 0.0)
  assert exact["pathwise"] == {"mu": 4.0, "sigma": 12.0}
  assert exact["score"] == {"mu": 30.0, "sigma": 136.0}


def exact_leave_one_out_variance(mu, sigma, k, s):
  """Exact variance of the S-sample leave-one-out estimator (Kool et al. 2019).

  With h the score, f_s = f(x_s), b_s the mean of the other S - 1 values and
  c = 1/(S - 1): b_s is independent of (f_s, h_s) with E b = E f = F and
  Var b = c Var f; Cov(a_1, a_2) = c^2 g^2 for a_s = (f_s - b_s) h_s, since
  E h = 0 removes every other cross term. Hence

      Var = (1/S) [ V_{b=F} + c E[h^2] Var f + c g^2 ],

  with V_{b=F} the per-sample variance at the constant baseline F, E[h^2] the
  Fisher information (1/sigma^2 for mu, 2/sigma^2 for sigma) and
  Var f = 4 d^2 sigma^2 + 2 sigma^4.
  """
  exact = exact_moments(mu, sigma, k)
  d, c = mu - k, 1.0 / (s - 1)
  var_f = 4 * d**2 * sigma**2 + 2 * sigma**4
  fisher = {"mu": 1 / sigma**2, "sigma": 2 / sigma**2}
  return {name: (exact["score_opt_b"][name] + c * fisher[name] * var_f
                 + c * exact["grad"][name] ** 2) / s
          for name in ("mu", "sigma")}


@pytest.mark.parametrize("mu,sigma,k", SETTINGS)
def test_leave_one_out_is_unbiased_and_lowers_variance(mu, sigma, k):
  s = 4
  params = {"mu": mu, "sigma": sigma}
  plain = lambda key: E.score_function_grad(
      quadratic(k), normal_fn, params, key, num_samples=s)
  loo = lambda key: E.score_function_grad(
      quadratic(k), normal_fn, params, key, num_samples=s,
      baseline="leave_one_out")
  key = jax.random.key(2)
  draws_plain = per_repeat_grads(plain, key, R)
  draws_loo = per_repeat_grads(loo, key, R)  # Common random numbers.
  exact = exact_moments(mu, sigma, k)
  exact_loo = exact_leave_one_out_variance(mu, sigma, k, s)
  for name in ("mu", "sigma"):
    assert_mean_close(draws_loo[name], exact["grad"][name])
    # Without a baseline the S-sample variance is exactly Var_1 / S.
    assert_variance_close(draws_plain[name], exact["score"][name] / s)
    assert_variance_close(draws_loo[name], exact_loo[name])
    assert exact_loo[name] < exact["score"][name] / s


def test_exact_leave_one_out_variance_at_unit_parameters():
  # mu = sigma = 1, k = 0, S = 4: (18 + 2 + 4/3) / 4 and (96 + 4 + 4/3) / 4.
  v = exact_leave_one_out_variance(1.0, 1.0, 0.0, 4)
  assert v["mu"] == pytest.approx(64 / 12)
  assert v["sigma"] == pytest.approx(304 / 12)


# ---------------------------------------------------------------------------
# Degenerate limits and the "never differentiates f" trap.
# ---------------------------------------------------------------------------


def test_constant_f_with_matching_baseline_gives_exactly_zero():
  params = {"mu": jnp.array([0.2, -1.0]), "sigma": jnp.array([1.0, 3.0])}
  g = E.score_function_grad(lambda x: jnp.float32(7.0), normal_fn, params,
                            jax.random.key(4), num_samples=16, baseline=7.0)
  chex.assert_trees_all_equal(g, jax.tree.map(jnp.zeros_like, params))
  g_loo = E.score_function_grad(lambda x: jnp.float32(7.0), normal_fn, params,
                                jax.random.key(4), num_samples=16,
                                baseline="leave_one_out")
  # Leave-one-out: zero up to float32 rounding of the mean of the others
  # (XLA computes the division by S - 1 as a multiplication by 1/(S - 1)).
  chex.assert_trees_all_close(g_loo, jax.tree.map(jnp.zeros_like, params),
                              atol=1e-6)


def test_pathwise_with_zero_noise_equals_deterministic_gradient():
  params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.25)}
  f = lambda x: jnp.sum(jnp.sin(x) * x)
  dist_fn = lambda p: distrax.MultivariateNormalDiag(
      2.0 * p["w"] + p["b"], jnp.zeros(3))
  g = E.pathwise_grad(f, dist_fn, params, jax.random.key(5), num_samples=8)
  expected = jax.grad(lambda p: f(2.0 * p["w"] + p["b"]))(params)
  chex.assert_trees_all_close(g, expected, rtol=1e-6, atol=1e-6)


def test_score_function_never_differentiates_f():
  @jax.custom_jvp
  def trap(x):
    return jnp.sum(x**2)

  @trap.defjvp
  def _trap_jvp(primals, tangents):
    raise AssertionError("score_function_grad differentiated f")

  params = {"mu": 1.0, "sigma": 1.0}
  for baseline in (None, 0.5, "leave_one_out"):
    g = jax.jit(lambda key, b=baseline: E.score_function_grad(
        trap, normal_fn, params, key, num_samples=8, baseline=b))(
            jax.random.key(6))
    assert all(np.isfinite(v) for v in jax.tree.leaves(g))
  # The same trap fires for the pathwise estimator, which must differentiate f.
  with pytest.raises(AssertionError, match="differentiated f"):
    E.pathwise_grad(trap, normal_fn, params, jax.random.key(6), num_samples=2)


# ---------------------------------------------------------------------------
# Distributions beyond the scalar Gaussian.
# ---------------------------------------------------------------------------


def test_multivariate_normal_diag_pathwise_and_score_are_unbiased():
  mu = jnp.array([1.0, -0.5, 0.0])
  sigma = jnp.array([0.5, 1.0, 2.0])
  k = 0.25
  dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mu"], p["sigma"])
  params = {"mu": mu, "sigma": sigma}
  for est in (E.pathwise_grad, functools.partial(E.score_function_grad,
                                                 baseline="leave_one_out")):
    grad_fn = lambda key, est=est: est(quadratic(k), dist_fn, params, key,
                                       num_samples=4)
    draws = per_repeat_grads(grad_fn, jax.random.key(7), 40_000)
    for i in range(3):
      assert_mean_close(draws["mu"][:, i], 2 * (mu[i] - k))
      assert_mean_close(draws["sigma"][:, i], 2 * sigma[i])


def test_tanh_transformed_gaussian_pathwise_matches_quadrature():
  """d/dmu E[tanh(u)] = E[1 - tanh(u)^2], u ~ N(mu, sigma^2) (Gauss-Hermite)."""
  mu, sigma = 0.3, 0.8
  nodes, weights = np.polynomial.hermite_e.hermegauss(80)
  u = mu + sigma * nodes
  exact_dmu = np.sum(weights * (1 - np.tanh(u) ** 2)) / np.sqrt(2 * np.pi)
  exact_dsigma = np.sum(weights * (1 - np.tanh(u) ** 2) * nodes) / np.sqrt(
      2 * np.pi)
  dist_fn = lambda p: distrax.Transformed(
      distrax.MultivariateNormalDiag(p["mu"], p["sigma"]),
      distrax.Block(distrax.Tanh(), 1))
  params = {"mu": jnp.array([mu]), "sigma": jnp.array([sigma])}
  grad_fn = lambda key: E.pathwise_grad(jnp.sum, dist_fn, params, key,
                                        num_samples=1)
  draws = per_repeat_grads(grad_fn, jax.random.key(8), R)
  assert_mean_close(draws["mu"][:, 0], exact_dmu)
  assert_mean_close(draws["sigma"][:, 0], exact_dsigma)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 7.0])
def test_implicit_reparameterization_gamma(alpha):
  """d/dalpha E[x] = 1 for x ~ Gamma(alpha, 1) (Figurnov et al. 2018)."""
  grad_fn = lambda key: E.pathwise_grad(
      lambda x: x, lambda a: distrax.Gamma(a, 1.0), alpha, key, num_samples=1)
  draws = per_repeat_grads(grad_fn, jax.random.key(9), R)
  assert_mean_close(draws, 1.0)


def test_implicit_reparameterization_beta_and_dirichlet():
  a, b = 1.5, 3.0
  beta_fn = lambda p: distrax.Beta(p["a"], p["b"])
  grad_fn = lambda key: E.pathwise_grad(lambda x: x, beta_fn,
                                        {"a": a, "b": b}, key, num_samples=1)
  draws = per_repeat_grads(grad_fn, jax.random.key(10), R)
  assert_mean_close(draws["a"], b / (a + b) ** 2)   # d/da a/(a+b)
  assert_mean_close(draws["b"], -a / (a + b) ** 2)  # d/db a/(a+b)

  conc = jnp.array([0.7, 2.0, 4.0])
  total = float(conc.sum())
  grad_fn = lambda key: E.pathwise_grad(lambda x: x[0], distrax.Dirichlet,
                                        conc, key, num_samples=1)
  draws = per_repeat_grads(grad_fn, jax.random.key(11), R)
  # E[x_0] = a_0 / A: d/da_0 = (A - a_0) / A^2, d/da_j = -a_0 / A^2.
  assert_mean_close(draws[:, 0], (total - 0.7) / total**2)
  assert_mean_close(draws[:, 1], -0.7 / total**2)
  assert_mean_close(draws[:, 2], -0.7 / total**2)


def test_pathwise_on_flax_parameter_tree_equals_hand_written_grad():
  """A whole Flax parameter tree as params; same noise as a direct jax.grad."""
  model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])
  params = model.init(jax.random.key(0), jnp.ones((1, 4)))
  context = jnp.linspace(-1.0, 1.0, 4)[None]
  f = lambda x: jnp.sum(jnp.cos(x))
  dist_fn = lambda p: distrax.Normal(model.apply(p, context)[0], 0.7)
  key = jax.random.key(12)
  g = E.pathwise_grad(f, dist_fn, params, key, num_samples=5)

  def direct(p):
    x = dist_fn(p).sample(seed=key, sample_shape=(5,))
    return jnp.mean(jax.vmap(f)(x))

  chex.assert_trees_all_close(g, jax.grad(direct)(params), rtol=1e-5,
                              atol=1e-7)
  chex.assert_trees_all_equal_structs(g, params)


# ---------------------------------------------------------------------------
# The surrogate, determinism and bad input.
# ---------------------------------------------------------------------------


def test_score_function_surrogate_value_and_gradient():
  theta = jnp.array([0.3, -0.2, 0.9])
  f_value = jnp.array([1.0, 4.0, -2.0])
  baseline = 0.5

  def surrogate(t):
    log_prob = jnp.sin(t) * 2.0
    return E.score_function_surrogate(log_prob, f_value, baseline)

  assert float(surrogate(theta)) == pytest.approx(float(f_value.mean()))
  expected = 2.0 * jnp.cos(theta) * (f_value - baseline) / 3
  np.testing.assert_allclose(jax.grad(surrogate)(theta), expected, rtol=1e-6)
  # f_value and baseline receive no gradient.
  grad_f, grad_b = jax.grad(
      lambda fv, b: E.score_function_surrogate(jnp.sin(theta), fv, b),
      argnums=(0, 1))(f_value, baseline)
  np.testing.assert_array_equal(grad_f, jnp.zeros(3))
  assert float(grad_b) == 0.0


def test_same_key_same_result():
  params = {"mu": 0.1, "sigma": 2.0}
  run = jax.jit(lambda key: E.score_function_grad(
      quadratic(1.0), normal_fn, params, key, num_samples=32,
      baseline="leave_one_out"))
  chex.assert_trees_all_equal(run(jax.random.key(5)), run(jax.random.key(5)))


def test_bad_inputs_raise_clear_errors():
  params = {"mu": 1.0, "sigma": 1.0}
  key = jax.random.key(0)
  f = quadratic(0.0)
  with pytest.raises(ValueError, match="num_samples=0"):
    E.pathwise_grad(f, normal_fn, params, key, num_samples=0)
  with pytest.raises(TypeError, match="num_samples must be a Python int"):
    E.score_function_grad(f, normal_fn, params, key, num_samples=2.0)
  with pytest.raises(ValueError, match=r"leave_one_out.*num_samples=1"):
    E.score_function_grad(f, normal_fn, params, key, num_samples=1,
                          baseline="leave_one_out")
  with pytest.raises(ValueError, match="'mean'"):
    E.score_function_grad(f, normal_fn, params, key, num_samples=2,
                          baseline="mean")
  with pytest.raises(TypeError, match=r"baseline must be.*got \{\} of type"):
    E.score_function_grad(f, normal_fn, params, key, num_samples=2,
                          baseline={})
  with pytest.raises(ValueError, match="per-sample output of shape"):
    E.pathwise_grad(lambda x: jnp.stack([x, x]), normal_fn, params, key,
                    num_samples=2)
  with pytest.raises(TypeError, match="Categorical gives samples of dtype "
                     "int32"):
    E.pathwise_grad(lambda x: x.astype(jnp.float32),
                    lambda p: distrax.Categorical(logits=p), jnp.zeros(3), key,
                    num_samples=2)
  with pytest.raises(TypeError, match="log_prob must have a floating dtype"):
    E.score_function_surrogate(jnp.zeros(3, jnp.int32), jnp.ones(3))

  class NoLogProb:
    def __init__(self, p):
      self.p = p

    def sample(self, seed, sample_shape=()):
      return jax.random.normal(seed, sample_shape) + self.p

  with pytest.raises(TypeError, match="NoLogProb without it"):
    E.score_function_grad(f, NoLogProb, 0.0, key, num_samples=2)

  class NotReparameterized(NoLogProb):
    reparameterization_type = "NOT_REPARAMETERIZED"

  with pytest.raises(TypeError, match="NotReparameterized is not"):
    E.pathwise_grad(f, NotReparameterized, 0.0, key, num_samples=2)
  with pytest.raises(TypeError, match="distrax/TFP protocol"):
    E.pathwise_grad(f, lambda p: p, params, key, num_samples=2)

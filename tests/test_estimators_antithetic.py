"""Statistical tests of ARM and DisARM (common/_estimators/antithetic.py).

Oracles (stated here, computed exactly):

* Coupled Bernoulli variables: logits of shape [2, 2] (four variables) and
  f(b) = sin(2 b00 - b01 + b10 / 2) + (sum(b) - 1.3)^2 + 3 b00 b11, which
  couples them nonlinearly. E f is the sum over the 16 configurations of
  prod_i p_i^b_i (1 - p_i)^(1 - b_i) f(b); its gradient is jax.grad of that
  finite sum.
* Exact moments of both estimators, by integrating over the uniform u: in
  each coordinate, b_i = 1[u_i < p_i] and b~_i = 1[1 - u_i < p_i] are
  constant on the three intervals cut at min(p_i, 1 - p_i) and
  max(p_i, 1 - p_i), so u's cube splits into 3^4 = 81 cells on which f(b)
  and f(b~) are constant. DisARM's estimate is constant on a cell; ARM's is
  (f(b~) - f(b)) (u_i - 1/2), whose first and second moments on a cell are
  the interval integrals of (u_i - 1/2) and (u_i - 1/2)^2 times the other
  intervals' lengths. The exact means must equal the enumerated gradient
  (unbiasedness), and DisARM's exact variance must not exceed ARM's in any
  coordinate (Rao-Blackwellization; Dong et al. 2020, Sec. 3).
* One variable, p = sigmoid(logit), D = f(1) - f(0) (Dong et al. 2020):
      Var ARM    = [(2/3)(1/8 - |p - 1/2|^3) - p^2 (1 - p)^2] D^2,
      Var DisARM = p (1 - p) max(p, 1 - p) |p - 1/2| D^2;
  at logit 0, Var ARM = D^2 / 48 and DisARM's every draw equals D / 4.

Monte-Carlo means and variances of the implementation are compared with the
exact values within 5 standard errors computed from the draws (the standard
error of a sample variance from the draws' squared deviations); seeds are
fixed, so every test is deterministic.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E

NUM_SE = 5.0
R = 100_000  # Draws for Monte-Carlo moments.
LOGITS = jnp.array([[0.7, -1.2], [2.0, 0.0]])
ESTIMATORS = {"arm": E.arm_grad, "disarm": E.disarm_grad}


def coupled_f(b):
  """b: float {0, 1} [2, 2] (four coupled variables)."""
  return (jnp.sin(2.0 * b[0, 0] - b[0, 1] + 0.5 * b[1, 0])
          + (jnp.sum(b) - 1.3) ** 2 + 3.0 * b[0, 0] * b[1, 1])


def _configs(shape):
  n = int(np.prod(shape))
  return jnp.array(list(itertools.product((0.0, 1.0), repeat=n))).reshape(
      (-1, *shape))


def exact_grad(f, logits):
  configs = _configs(logits.shape)

  def expectation(l):
    log_p = jnp.sum(configs * jax.nn.log_sigmoid(l)
                    + (1.0 - configs) * jax.nn.log_sigmoid(-l),
                    axis=tuple(range(1, configs.ndim)))
    return jnp.sum(jnp.exp(log_p) * jax.vmap(f)(configs))
  return jax.grad(expectation)(logits)


def exact_moments(f, logits):
  """{"arm": (mean, var), "disarm": (mean, var)} by integrating over u."""
  p = np.asarray(jax.nn.sigmoid(logits), np.float64).reshape(-1)
  n = p.size
  cuts = np.stack([np.zeros(n), np.minimum(p, 1 - p), np.maximum(p, 1 - p),
                   np.ones(n)], axis=1)  # [n, 4]
  lo, hi = cuts[:, :-1], cuts[:, 1:]  # [n, 3] intervals.
  m1 = ((hi - 0.5) ** 2 - (lo - 0.5) ** 2) / 2  # int (u - 1/2) du.
  m2 = ((hi - 0.5) ** 3 - (lo - 0.5) ** 3) / 3  # int (u - 1/2)^2 du.
  cells = np.array(list(itertools.product(range(3), repeat=n)))  # [C, n]
  coordinate = np.arange(n)
  pick = lambda table: table[coordinate, cells]  # [C, n]
  u = pick((lo + hi) / 2)
  b, b_anti = (u < p).astype(np.float64), (1.0 - u < p).astype(np.float64)
  f_cells = jax.vmap(f)
  as_input = lambda x: jnp.asarray(x.reshape(-1, *logits.shape), jnp.float32)
  f_b = np.asarray(f_cells(as_input(b)), np.float64)[:, None]  # [C, 1]
  f_anti = np.asarray(f_cells(as_input(b_anti)), np.float64)[:, None]
  lengths = pick(hi - lo)
  prob = np.prod(lengths, axis=1, keepdims=True)  # [C, 1]
  others = np.stack([np.prod(np.delete(lengths, i, axis=1), axis=1)
                     for i in range(n)], axis=1)  # The other intervals'.
  arm = ((f_anti - f_b) * pick(m1) * others,
         (f_anti - f_b) ** 2 * pick(m2) * others)
  sigmoid_abs = 1.0 / (1.0 + np.exp(-np.abs(
      np.asarray(logits, np.float64).reshape(-1))))
  g = 0.5 * (f_b - f_anti) * (1.0 - 2.0 * b_anti) * (b != b_anti) * sigmoid_abs
  disarm = (prob * g, prob * g ** 2)
  return {name: (first.sum(0).reshape(logits.shape),
                 (second.sum(0) - first.sum(0) ** 2).reshape(logits.shape))
          for name, (first, second) in (("arm", arm), ("disarm", disarm))}


def draws(name, f, logits, *, num_samples=1, num_draws=R, seed=0):
  """num_draws independent estimates [R, ...] (float64 for the moments)."""
  keys = jax.random.split(jax.random.key(seed), num_draws)
  estimator = functools.partial(ESTIMATORS[name], f,
                                num_samples=num_samples)
  g = jax.jit(jax.vmap(lambda k: estimator(logits, k)))(keys)
  return np.asarray(g, np.float64)


def assert_mean_close(samples, exact):
  se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
  np.testing.assert_array_less(np.abs(samples.mean(axis=0) - exact),
                               NUM_SE * se + 1e-6)


def assert_variance_close(samples, exact):
  squared = (samples - samples.mean(axis=0)) ** 2
  se = squared.std(axis=0, ddof=1) / np.sqrt(len(samples))
  np.testing.assert_array_less(
      np.abs(samples.var(axis=0, ddof=1) - exact), NUM_SE * se + 1e-9)


def test_exact_moments_are_unbiased_and_disarm_never_worse():
  """The oracle itself: cell integration agrees with enumeration."""
  grad = np.asarray(exact_grad(coupled_f, LOGITS))
  moments = exact_moments(coupled_f, LOGITS)
  for name, (mean, _) in moments.items():
    np.testing.assert_allclose(mean, grad, rtol=1e-5, atol=1e-6,
                               err_msg=name)
  var_arm, var_disarm = moments["arm"][1], moments["disarm"][1]
  assert np.all(var_disarm <= var_arm + 1e-9), (var_disarm, var_arm)
  assert np.all(var_disarm < 0.9 * var_arm)  # Strictly lower here.


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unbiased_with_the_exact_variance_on_coupled_variables(name):
  samples = draws(name, coupled_f, LOGITS)
  _, variance = exact_moments(coupled_f, LOGITS)[name]
  assert_mean_close(samples, np.asarray(exact_grad(coupled_f, LOGITS)))
  assert_variance_close(samples, variance)


def test_disarm_variance_at_most_arm_in_every_coordinate():
  """Measured on the implementation, same keys (common random numbers)."""
  var = {name: draws(name, coupled_f, LOGITS).var(axis=0, ddof=1)
         for name in ESTIMATORS}
  assert np.all(var["disarm"] <= var["arm"]), var


@pytest.mark.parametrize("logit", [-2.0, -0.5, 0.0, 1.0, 3.0])
def test_one_variable_variances_match_the_closed_forms(logit):
  f = lambda b: 3.0 * b ** 2 - 1.0 + jnp.cos(b)  # D = 3 + cos 1 - 1.
  d = 3.0 + np.cos(1.0) - 1.0
  p = 1.0 / (1.0 + np.exp(-logit))
  closed = {
      "arm": ((2.0 / 3.0) * (0.125 - abs(p - 0.5) ** 3)
              - p ** 2 * (1 - p) ** 2) * d ** 2,
      "disarm": p * (1 - p) * max(p, 1 - p) * abs(p - 0.5) * d ** 2,
  }
  logits = jnp.asarray(logit, jnp.float32)  # A scalar variable.
  moments = exact_moments(f, logits)
  for name in ESTIMATORS:
    samples = draws(name, f, logits)
    assert samples.shape == (R,)
    np.testing.assert_allclose(moments[name][1], closed[name], rtol=1e-5,
                               atol=1e-9)
    assert_mean_close(samples, p * (1 - p) * d)
    assert_variance_close(samples, closed[name])


def test_at_logit_zero_arm_variance_is_d_squared_over_48_and_disarm_exact():
  f = lambda b: 3.0 * b[0] - 1.0  # f(1) - f(0) = D = 3.
  logits = jnp.zeros(1)
  arm = draws("arm", f, logits)
  assert_mean_close(arm, np.array([3.0 / 4]))
  assert_variance_close(arm, np.array([9.0 / 48]))
  disarm = draws("disarm", f, logits, num_draws=1000)
  np.testing.assert_allclose(disarm, 0.75, rtol=1e-6)  # Variance 0.
  assert np.ptp(disarm) == 0.0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_num_samples_averages_independent_draws(name):
  """Averaging S draws divides the exact variance by S."""
  samples = draws(name, coupled_f, LOGITS, num_samples=4, num_draws=R // 4,
                  seed=1)
  mean, variance = exact_moments(coupled_f, LOGITS)[name]
  assert_mean_close(samples, mean)
  assert_variance_close(samples, variance / 4)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_jit_and_vmap_equal_eager_calls(name):
  estimator = ESTIMATORS[name]
  keys = jax.random.split(jax.random.key(3), 2)
  batched_logits = jnp.stack([LOGITS, -2.0 * LOGITS])
  batched = jax.vmap(lambda l, k: estimator(coupled_f, l, k, num_samples=2))(
      batched_logits, keys)
  jitted = jax.jit(functools.partial(estimator, coupled_f, num_samples=2))
  for i in range(2):
    eager = estimator(coupled_f, batched_logits[i], keys[i], num_samples=2)
    np.testing.assert_allclose(batched[i], eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jitted(batched_logits[i], keys[i]), eager,
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_input_is_named(name):
  estimator = ESTIMATORS[name]
  key = jax.random.key(0)
  with pytest.raises(TypeError, match=r"f must be callable.*got 3"):
    estimator(3, LOGITS, key)
  with pytest.raises(TypeError, match=r"logits must have a floating dtype; "
                     r"got dtype int32"):
    estimator(coupled_f, jnp.zeros(2, jnp.int32), key)
  with pytest.raises(ValueError, match=r"f must return a scalar for each "
                     r"sample; got per-sample output of shape \(2, 2\)"):
    estimator(lambda b: b, LOGITS, key)

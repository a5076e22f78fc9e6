"""Statistical tests of RSVI and G-REP (common/_estimators/rejection.py).

Oracles, for z ~ Gamma(a, b) (shape a, rate b), in closed form:
  E[z] = a / b:                   d/da = 1 / b,          d/db = -a / b^2.
  E[log z] = digamma(a) - log b:  d/da = trigamma(a),    d/db = -1 / b.
  E[z^2] = a (a + 1) / b^2:       d/da = (2a + 1) / b^2, d/db = -2a(a + 1) / b^3.
  E[exp(-z)] = (b / (b + 1))^a:   d/da = (b / (b + 1))^a log(b / (b + 1)),
                                  d/db = a b^(a - 1) / (b + 1)^(a + 1).
  A product of independent entries, f = z_1 z_2: E = a_1 a_2 / (b_1 b_2), so
  d/da_1 = a_2 / (b_1 b_2) and d/db_1 = -a_1 a_2 / (b_1^2 b_2).

Each estimate (one sample per draw, R draws) must match within 5 standard
errors computed from the draws (plus 1e-5 relative, for the d/db of log z,
which is -1/b on every draw). RSVI is tested with B = 0 at a = 1 (the
smallest shape the Marsaglia-Tsang proposal allows, where the correction
term is largest) and with B = 1, 2 at a < 1; G-REP at a = 0.3, 1 and 4.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from common import estimators as E

NUM_SE = 5.0
R = 50_000

TEST_FUNCTIONS = {
    "z": (lambda z: z,
          lambda a, b: (1 / b, -a / b**2)),
    "log_z": (jnp.log,
              lambda a, b: (special.polygamma(1, a), -1 / b)),
    "z_squared": (lambda z: z**2,
                  lambda a, b: ((2 * a + 1) / b**2, -2 * a * (a + 1) / b**3)),
    "exp_minus_z": (lambda z: jnp.exp(-z),
                    lambda a, b: ((b / (b + 1)) ** a * np.log(b / (b + 1)),
                                  a * b ** (a - 1) / (b + 1) ** (a + 1))),
}


def assert_means_close(draws, exact, context="", num_se=NUM_SE):
  """Columns of draws [R, n] against exact [n], within num_se SE each."""
  draws = np.asarray(draws, np.float64).reshape(draws.shape[0], -1)
  exact = np.asarray(exact, np.float64).reshape(-1)
  se = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
  err = np.abs(draws.mean(axis=0) - exact)
  assert np.all(err <= num_se * se + 1e-5 * np.abs(exact)), (
      f"{context}MC means {draws.mean(axis=0)} vs exact {exact} (SE {se})")


def rsvi(f, shape_augmentation):
  return lambda a, b, key: E.gamma_rejection_grad(
      f, a, b, key, num_samples=1, shape_augmentation=shape_augmentation)


def grep(f):
  return lambda a, b, key: E.gamma_generalized_reparam_grad(
      f, a, b, key, num_samples=1)


CASES = {  # name -> (estimator factory, concentrations, rates).
    "rsvi_B0": (lambda f: rsvi(f, 0), [1.0, 1.0, 2.5], [1.0, 2.0, 0.7]),
    "rsvi_B1": (lambda f: rsvi(f, 1), [0.3, 0.8], [1.5, 1.0]),
    "rsvi_B2": (lambda f: rsvi(f, 2), [0.3], [0.5]),
    "grep": (grep, [0.3, 1.0, 4.0], [1.5, 1.0, 3.0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unbiased_against_closed_forms(case):
  """Every test function at every (a, b) of the case, in one jitted program."""
  factory, a, b = CASES[case]
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)

  @jax.jit
  def all_draws(keys):
    draws = {}
    for name, (f, _) in TEST_FUNCTIONS.items():
      per_setting = jax.vmap(factory(f), in_axes=(0, 0, None))
      draws[name] = jax.vmap(per_setting, in_axes=(None, None, 0))(
          a, b, keys)
    return draws

  draws = all_draws(jax.random.split(jax.random.key(len(case)), R))
  for name, (g_a, g_b) in draws.items():
    exact_a, exact_b = TEST_FUNCTIONS[name][1](a.astype(np.float64),
                                               b.astype(np.float64))
    context = f"{name} at a={a}, b={b}: "
    assert_means_close(g_a, exact_a, context)
    assert_means_close(g_b, exact_b, context)


@pytest.mark.parametrize("estimator", ["rsvi", "grep"])
def test_elementwise_over_arrays_with_a_coupled_f(estimator):
  """f = z_1 z_2 couples the entries; a broadcast scalar rate."""
  a, b = jnp.array([0.6, 2.0]), jnp.array([1.5, 0.5])
  if estimator == "rsvi":
    one = lambda key: E.gamma_rejection_grad(
        jnp.prod, a, b, key, num_samples=2, shape_augmentation=1)
  else:
    one = lambda key: E.gamma_generalized_reparam_grad(
        jnp.prod, a, b, key, num_samples=2)
  g_a, g_b = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), R))
  a1, a2, b1, b2 = 0.6, 2.0, 1.5, 0.5
  assert_means_close(g_a, [a2 / (b1 * b2), a1 / (b1 * b2)])
  assert_means_close(g_b, [-a1 * a2 / (b1**2 * b2), -a1 * a2 / (b1 * b2**2)])
  # A scalar rate: its gradient is the sum over entries, d/db E[z_1 z_2] =
  # -2 a_1 a_2 / b^3 at b = 1.5.
  if estimator == "grep":
    g_b = jax.jit(jax.vmap(lambda key: E.gamma_generalized_reparam_grad(
        jnp.prod, a, jnp.float32(1.5), key, num_samples=1)[1]))(
            jax.random.split(jax.random.key(4), R))
    chex.assert_shape(g_b, (R,))
    assert_means_close(g_b[:, None], [-2 * a1 * a2 / 1.5**3])


def test_jit_has_one_trace_across_keys():
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def both(key):
    k1, k2 = jax.random.split(key)
    return (E.gamma_rejection_grad(jnp.sum, jnp.ones(3), jnp.ones(3), k1,
                                   num_samples=64, shape_augmentation=0),
            E.gamma_generalized_reparam_grad(jnp.sum, jnp.ones(3),
                                             jnp.ones(3), k2, num_samples=64))

  for seed in range(3):
    out = both(jax.random.key(seed))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))


def test_bad_inputs_raise_clear_errors():
  key, a, b = jax.random.key(0), jnp.array([0.5, 2.0]), jnp.ones(2)
  with pytest.raises(ValueError, match=r"concentration \+ shape_augmentation "
                     r">= 1.*min\(concentration\)=0.5 with "
                     r"shape_augmentation=0"):
    E.gamma_rejection_grad(jnp.sum, a, b, key, num_samples=1,
                           shape_augmentation=0)
  with pytest.raises(ValueError, match="shape_augmentation=-1"):
    E.gamma_rejection_grad(jnp.sum, a, b, key, num_samples=1,
                           shape_augmentation=-1)
  with pytest.raises(TypeError, match="shape_augmentation must be a Python "
                     "int.*got 1.0"):
    E.gamma_rejection_grad(jnp.sum, a, b, key, num_samples=1,
                           shape_augmentation=1.0)
  for fn in (E.gamma_rejection_grad, E.gamma_generalized_reparam_grad):
    with pytest.raises(TypeError, match="concentration must have a floating"):
      fn(jnp.sum, jnp.ones(2, jnp.int32), b, key, num_samples=1)
    with pytest.raises(ValueError, match=r"concentration must be > 0 "
                       r"everywhere; got concentration=\[0.5, -1.0\]"):
      fn(jnp.sum, jnp.array([0.5, -1.0]), b, key, num_samples=1)
    with pytest.raises(ValueError, match=r"rate must be > 0 everywhere; got "
                       r"rate=\[1.0, 0.0\]"):
      fn(jnp.sum, a + 1.0, jnp.array([1.0, 0.0]), key, num_samples=1)
    with pytest.raises(ValueError, match=r"rate must broadcast.*\(2,\).*"
                       r"\(3,\)"):
      fn(jnp.sum, a + 1.0, jnp.ones(3), key, num_samples=1)
    with pytest.raises(ValueError, match=r"f must return a scalar; got output "
                       r"of shape \(2,\)"):  # Raised while tracing f.
      jax.eval_shape(lambda k, fn=fn: fn(lambda z: z, a + 1.0, b, k,
                                         num_samples=1), key)
    with pytest.raises(ValueError, match="num_samples=0"):
      fn(jnp.sum, a + 1.0, b, key, num_samples=0)

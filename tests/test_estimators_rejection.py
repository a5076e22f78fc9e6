"""Statistical tests of RSVI and G-REP (common/_estimators/rejection.py).

Oracles, for z ~ Gamma(a, b) (shape a, rate b), in closed form:
  E[z] = a / b:                   d/da = 1 / b,          d/db = -a / b^2.
  E[log z] = digamma(a) - log b:  d/da = trigamma(a),    d/db = -1 / b.
  E[z^2] = a (a + 1) / b^2:       d/da = (2a + 1) / b^2,
                                  d/db = -2a(a + 1) / b^3.
  E[exp(-z)] = (b / (b + 1))^a:   d/da = (b / (b + 1))^a log(b / (b + 1)),
                                  d/db = a b^(a - 1) / (b + 1)^(a + 1).
  A product of independent entries, f = z_1 z_2: E = a_1 a_2 / (b_1 b_2), so
  d/da_1 = a_2 / (b_1 b_2) and d/db_1 = -a_1 a_2 / (b_1^2 b_2).

Each Monte-Carlo mean (M batches of S samples; the estimator averages each
batch) must match within 5 standard errors computed from the M batch means
(plus 1e-5 relative, for the d/db of log z, which is -1/b on every draw).
RSVI is tested with B = 0 at a = 1 (the smallest shape the Marsaglia-Tsang
proposal allows, where the correction term is largest), with B = 2 at
a = 0.3 and 0.8, and with B = 1 on the coupled f; G-REP at a = 0.3, 1 and 4.
The batches run in a `jax.lax.map` over keys, so each estimator compiles its
Gamma sampler once, unbatched (compiling it under `jax.vmap` over keys costs
more than the sampling).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from common import estimators as E

NUM_SE = 5.0
M = 50  # Batches (independent keys).
S = 1_000  # Samples per batch.

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


def assert_means_close(batch_means, exact, context="", num_se=NUM_SE):
  """Columns of batch means [M, n] against exact [n], within num_se SE."""
  batch_means = np.asarray(batch_means, np.float64).reshape(
      batch_means.shape[0], -1)
  exact = np.asarray(exact, np.float64).reshape(-1)
  mean = batch_means.mean(axis=0)
  se = batch_means.std(axis=0, ddof=1) / np.sqrt(batch_means.shape[0])
  assert np.all(np.abs(mean - exact) <= num_se * se + 1e-5 * np.abs(exact)), (
      f"{context}MC means {mean} vs exact {exact} (SE {se})")


def rsvi(f, shape_augmentation):
  return lambda a, b, key: E.gamma_rejection_grad(
      f, a, b, key, num_samples=S, shape_augmentation=shape_augmentation)


def grep(f):
  return lambda a, b, key: E.gamma_generalized_reparam_grad(
      f, a, b, key, num_samples=S)


CASES = {  # name -> (estimator factory, concentrations, rates).
    "rsvi_B0": (lambda f: rsvi(f, 0), [1.0, 1.0, 2.5], [1.0, 2.0, 0.7]),
    "rsvi_B2": (lambda f: rsvi(f, 2), [0.3, 0.8], [1.5, 0.5]),
    "grep": (grep, [0.3, 1.0, 4.0], [1.5, 1.0, 3.0]),
}
COUPLED_A, COUPLED_B = np.array([0.6, 2.0]), np.array([1.5, 0.5])
SCALAR_RATE = 1.5


@functools.cache
def all_batch_means():
  """M batch means of every estimate below, from one jitted program.

  (case, name) -> (g_a, g_b), each [M, number of (a, b) pairs], for each case
  of CASES and each test function (the settings of a case share their keys);
  ("coupled", "rsvi") -> [M, 2] for f = z_1 z_2 with a rate per entry;
  ("coupled", "grep") -> ([M, 2], [M]) for f = z_1 z_2 with one scalar rate.
  """
  names = sorted(TEST_FUNCTIONS)
  branches = [TEST_FUNCTIONS[name][0] for name in names]

  def one_setting(factory, index, a, b, key):
    """The test function is picked by a traced index, so each case has one
    estimator (and one Gamma sampler) to compile for all functions."""
    return factory(lambda z: jax.lax.switch(index, branches, z))(a, b, key)

  def batch(key):
    keys = iter(jax.random.split(key, len(CASES) + 2))
    out = {}
    for case, (factory, a, b) in CASES.items():
      index = jnp.repeat(jnp.arange(len(names)), len(a))
      a_all = jnp.tile(jnp.asarray(a, jnp.float32), len(names))
      b_all = jnp.tile(jnp.asarray(b, jnp.float32), len(names))
      g_a, g_b = jax.vmap(functools.partial(one_setting, factory),
                          in_axes=(0, 0, 0, None))(index, a_all, b_all,
                                                   next(keys))
      for i, name in enumerate(names):
        rows = slice(i * len(a), (i + 1) * len(a))
        out[case, name] = (g_a[rows], g_b[rows])
    a = jnp.float32(COUPLED_A)
    out["coupled", "rsvi"] = E.gamma_rejection_grad(
        jnp.prod, a, jnp.float32(COUPLED_B), next(keys), num_samples=S,
        shape_augmentation=1)
    out["coupled", "grep"] = E.gamma_generalized_reparam_grad(
        jnp.prod, a, jnp.float32(SCALAR_RATE), next(keys), num_samples=S)
    return out

  keys = jax.random.split(jax.random.key(0), M)
  means = jax.jit(lambda k: jax.lax.map(batch, k))(keys)
  return jax.tree.map(lambda x: np.asarray(x, np.float64), means)


@pytest.mark.parametrize("case", sorted(CASES))
def test_unbiased_against_closed_forms(case):
  """Every test function at every (a, b) of the case."""
  _, a, b = CASES[case]
  a, b = np.asarray(a), np.asarray(b)
  for name, (_, exact_fn) in TEST_FUNCTIONS.items():
    g_a, g_b = all_batch_means()[case, name]
    exact_a, exact_b = exact_fn(a, b)
    context = f"{case}, {name} at a={a}, b={b}: "
    assert_means_close(g_a, exact_a, context)
    assert_means_close(g_b, exact_b, context)


def test_rsvi_elementwise_over_arrays_with_a_coupled_f():
  g_a, g_b = all_batch_means()["coupled", "rsvi"]
  (a1, a2), (b1, b2) = COUPLED_A, COUPLED_B
  assert_means_close(g_a, [a2 / (b1 * b2), a1 / (b1 * b2)])
  assert_means_close(g_b, [-a1 * a2 / (b1**2 * b2), -a1 * a2 / (b1 * b2**2)])


def test_grep_coupled_f_with_a_scalar_rate_summed_over_entries():
  """d/db E[z_1 z_2] = -2 a_1 a_2 / b^3 for one rate b shared by both."""
  g_a, g_b = all_batch_means()["coupled", "grep"]
  chex.assert_shape(g_b, (M,))
  (a1, a2), b = COUPLED_A, SCALAR_RATE
  assert_means_close(g_a, [a2 / b**2, a1 / b**2])
  assert_means_close(g_b[:, None], [-2 * a1 * a2 / b**3])


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

"""Tests of the public interface common/estimators.py.

`common.estimators` only re-exports the families implemented in
common/_estimators/ (each tested in tests/test_estimators_<family>.py). Tested
here: the exact set of public names (so a rename or a lost export fails), the
shared input convention (a non-int num_samples raises TypeError, a value
below the minimum ValueError, for every estimator that takes num_samples),
and `jax.vmap`/`jax.jit` across families (batched calls equal unbatched ones;
one trace for many keys, checked with `chex.assert_max_traces`).
"""

import inspect

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E

PUBLIC_NAMES = {
    # Types and constants.
    "Array", "PRNGKey", "PyTree", "Baseline", "LEAVE_ONE_OUT", "CATEGORICAL",
    "BERNOULLI", "GradMoments", "MovingAverageState",
    # reparameterization
    "gaussian_reparameterize", "tanh_gaussian_sample_and_log_prob",
    "tanh_gaussian_log_prob",
    # pathwise_score
    "pathwise_grad", "score_function_grad", "score_function_surrogate",
    # baselines
    "leave_one_out_baseline", "init_moving_average_baseline",
    "moving_average_baseline",
    # relaxations
    "gumbel_softmax", "straight_through",
    # control_variates
    "rebar_grad", "relax_grad",
    # rejection
    "gamma_rejection_grad", "gamma_generalized_reparam_grad",
    # measure_valued
    "measure_valued_grad",
    # multi_sample
    "iwae_grad",
    # diagnostics
    "grad_moments",
    # antithetic
    "arm_grad", "disarm_grad",
    # vimco
    "vimco_surrogate",
}


def test_public_names_are_exactly_the_exports():
  public = {name for name in dir(E) if not name.startswith("_")}
  assert public == PUBLIC_NAMES, (sorted(public - PUBLIC_NAMES),
                                  sorted(PUBLIC_NAMES - public))
  assert set(E.__all__) == PUBLIC_NAMES
  assert len(E.__all__) == len(PUBLIC_NAMES)  # No duplicates.
  type_aliases = {"Array", "PRNGKey", "PyTree", "Baseline"}  # chex/typing.
  for name in set(E.__all__) - type_aliases:
    obj = getattr(E, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
      assert obj.__module__.startswith("common._estimators."), (
          name, obj.__module__)


def quadratic(k):
  return lambda x: jnp.sum((x - k) ** 2)


def normal_fn(p):
  return distrax.Normal(p["mu"], p["sigma"])


def _num_samples_calls():
  """name -> (num_samples -> call) for every estimator with num_samples."""
  key, params = jax.random.key(0), {"mu": 1.0, "sigma": 1.0}
  f, logits = quadratic(0.0), jnp.zeros(3)
  return {
      "pathwise_grad": lambda n: E.pathwise_grad(
          f, normal_fn, params, key, num_samples=n),
      "score_function_grad": lambda n: E.score_function_grad(
          f, normal_fn, params, key, num_samples=n),
      "rebar_grad": lambda n: E.rebar_grad(
          f, logits, key, eta=1.0, log_temperature=0.0, kind="bernoulli",
          num_samples=n),
      "relax_grad": lambda n: E.relax_grad(
          f, logits, key, control_variate=lambda phi, z: phi * jnp.sum(z),
          cv_params=1.0, kind="bernoulli", num_samples=n),
      "gamma_rejection_grad": lambda n: E.gamma_rejection_grad(
          f, jnp.ones(2), jnp.ones(2), key, num_samples=n),
      "gamma_generalized_reparam_grad": lambda n: (
          E.gamma_generalized_reparam_grad(f, jnp.ones(2), jnp.ones(2), key,
                                           num_samples=n)),
      "measure_valued_grad": lambda n: E.measure_valued_grad(
          f, jnp.zeros(2), jnp.ones(2), key, num_samples=n),
      "iwae_grad": lambda n: E.iwae_grad(
          lambda theta, z: -jnp.sum(z**2), normal_fn, None, params, key,
          num_samples=n, estimator="dreg"),
      "arm_grad": lambda n: E.arm_grad(f, logits, key, num_samples=n),
      "disarm_grad": lambda n: E.disarm_grad(f, logits, key, num_samples=n),
  }


@pytest.mark.parametrize("name", sorted(_num_samples_calls()))
def test_num_samples_convention(name):
  call = _num_samples_calls()[name]
  for bad in (2.0, True, "2", None):
    with pytest.raises(TypeError, match=f"num_samples must be a Python int.*"
                       f"got {bad!r} of type {type(bad).__name__}"):
      call(bad)
  for bad in (0, -3):
    with pytest.raises(ValueError, match=f"num_samples must be >= 1; got "
                       f"num_samples={bad}"):
      call(bad)


def test_estimators_vmap_over_params():
  mus = jnp.array([-1.0, 0.0, 2.0])
  grads = jax.vmap(lambda m: E.pathwise_grad(
      quadratic(0.0), normal_fn, {"mu": m, "sigma": 0.0}, jax.random.key(0),
      num_samples=2))(mus)
  np.testing.assert_allclose(grads["mu"], 2 * mus, rtol=1e-6)
  # score_function_grad and gumbel_softmax under vmap (over params and keys)
  # equal the unbatched calls.
  keys = jax.random.split(jax.random.key(1), 3)
  sf = lambda m, key: E.score_function_grad(
      quadratic(0.0), normal_fn, {"mu": m, "sigma": 1.0}, key, num_samples=4,
      baseline="leave_one_out")
  batched = jax.vmap(sf)(mus, keys)
  for i in range(3):
    chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], batched),
                                sf(mus[i], keys[i]), rtol=1e-5)
  logits = jnp.array([[0.0, 1.0, 2.0]] * 3)
  y = jax.vmap(lambda key, l: E.gumbel_softmax(key, l, temperature=0.5))(
      keys, logits)
  np.testing.assert_allclose(
      y[1], E.gumbel_softmax(keys[1], logits[1], temperature=0.5), rtol=1e-6)


def test_no_recompilation_across_keys():
  chex.clear_trace_counter()
  params = {"mu": 1.0, "sigma": 1.0}

  @jax.jit
  @chex.assert_max_traces(n=1)
  def estimates(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return (E.pathwise_grad(quadratic(0.0), normal_fn, params, k1,
                            num_samples=4),
            E.score_function_grad(quadratic(0.0), normal_fn, params, k2,
                                  num_samples=4, baseline="leave_one_out"),
            E.gumbel_softmax(k3, jnp.zeros(3), temperature=0.5, hard=True))

  for seed in range(4):
    estimates(jax.random.key(seed))

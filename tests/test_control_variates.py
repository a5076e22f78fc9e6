"""Statistical tests of the REBAR and RELAX estimators in common/estimators.py.

Oracles (stated here, derived by hand or by exact enumeration):

* Bernoulli toy of Tucker et al. 2017, Sec. 5: f(b) = sum_i (b_i - t)^2 with
  b_i ~ Bernoulli(theta_i), theta_i = sigmoid(l_i). E f = sum_i [theta_i
  (1 - t)^2 + (1 - theta_i) t^2], so
      d E f / d l_i = theta_i (1 - theta_i) (1 - 2 t).
* Categorical toy: three categorical variables with K = 3 classes, value
  x_i = W_i . b_i, and f(b) = sin(x_0 x_1) + (x_0 + x_1 + x_2 - 1)^2 + x_0 x_2
  (couples every variable, nonlinear). E f is the sum over all 27
  configurations of prod_i softmax(l_i)[b_i] f(b); its gradient is jax.grad
  of that finite sum.
* A zero control variate gives plain REINFORCE exactly, for the same key:
      g = f(b) grad_l log p(b)   (Williams 1992),
  and a constant control variate c(z) = phi gives REINFORCE with baseline phi
  and d ||g||^2 / d phi = -2 (f(b) - phi) ||grad_l log p(b)||^2.
* REBAR with eta = 0 is REINFORCE, and ||g||^2 does not depend on the
  temperature, so d ||g||^2 / d log_temperature = 0 exactly.
* cv_variance_grad is d/dphi of the mean over draws of ||g||^2 for fixed
  noise; central finite differences of that mean with the same keys (common
  random numbers) must match it (float64, step 1e-4).

Monte-Carlo means are compared with exact values within 5 standard errors
computed from the samples; seeds are fixed, so every test is deterministic.
"""

import itertools

import chex
import distrax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import estimators as E

NUM_SE = 5.0
T = 0.45  # Tucker et al. 2017's target.
R = 20_000  # Repeats for means and variances.

BERNOULLI_LOGITS = [jnp.array([0.0]), jnp.array([0.0, 1.5, -2.0, 3.0])]
CATEGORICAL_LOGITS = jnp.array([[0.0, 1.0, -1.0], [0.5, 0.2, 0.0],
                                [-1.0, 0.0, 1.0]])
W = jnp.array([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5], [0.3, 2.0, -1.0]])


def tucker_f(b):
  return jnp.sum((b - T) ** 2)


def tucker_exact_grad(logits):
  theta = jax.nn.sigmoid(logits)
  return theta * (1.0 - theta) * (1.0 - 2.0 * T)


def coupled_f(b):
  """b: [3, 3] one-hot rows (or relaxed rows for REBAR)."""
  x = jnp.sum(b * W, axis=-1)
  return jnp.sin(x[0] * x[1]) + (jnp.sum(x) - 1.0) ** 2 + x[0] * x[2]


def coupled_exact_grad(logits):
  def expectation(l):
    p = jax.nn.softmax(l, axis=-1)
    total = 0.0
    for idx in itertools.product(range(3), repeat=3):
      b = jax.nn.one_hot(jnp.array(idx), 3)
      total += p[0, idx[0]] * p[1, idx[1]] * p[2, idx[2]] * coupled_f(b)
    return total
  return jax.grad(expectation)(logits)


def param_cv(phi, z):
  """A nonlinear, coupling control variate with a handful of parameters."""
  h = jnp.tanh(z)
  return (phi["offset"] + jnp.sum(phi["w"] * h)
          + phi["a"] * jnp.sum(h) ** 2)


def init_param_cv(shape, scale=0.3):
  key_w, _ = jax.random.split(jax.random.key(42))
  return {"offset": jnp.float32(0.1),
          "w": scale * jax.random.normal(key_w, shape),
          "a": jnp.float32(0.2)}


def zero_cv(phi, z):
  del z
  return phi


def draws(fn, num_repeats=R, seed=1):
  """fn(key) for num_repeats keys, jit + vmap; leaves get a leading [R] axis."""
  keys = jax.random.split(jax.random.key(seed), num_repeats)
  return jax.jit(jax.vmap(fn))(keys)


def assert_unbiased(samples, exact, num_se=NUM_SE):
  samples = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
  exact = np.asarray(exact, np.float64).reshape(-1)
  se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
  err = np.abs(samples.mean(axis=0) - exact)
  assert np.all(err <= num_se * se), (
      f"MC means {samples.mean(axis=0)} vs exact {exact}: "
      f"{np.max(err / se):.1f} standard errors off")


def total_variance(samples):
  samples = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
  return samples.var(axis=0, ddof=1).sum()


def rebar(f, logits, kind, eta=1.0, temperature=0.5, num_samples=1):
  return lambda key: E.rebar_grad(
      f, logits, key, eta=eta, log_temperature=jnp.log(temperature),
      kind=kind, num_samples=num_samples)


def relax(f, logits, kind, cv, phi, num_samples=1):
  return lambda key: E.relax_grad(
      f, logits, key, control_variate=cv, cv_params=phi, kind=kind,
      num_samples=num_samples)


def reinforce(f, logits, kind):
  return relax(f, logits, kind, zero_cv, jnp.float32(0.0))


def train_param_cv(f, logits, kind, *, steps=200, num_samples=16):
  """Adam on the returned cv_variance_grad (Grathwohl et al. 2018, Alg. 2)."""
  phi = init_param_cv(logits.shape)
  opt = optax.adam(3e-2)

  def step(carry, key):
    phi, opt_state = carry
    _, g_phi = E.relax_grad(f, logits, key, control_variate=param_cv,
                            cv_params=phi, kind=kind, num_samples=num_samples)
    updates, opt_state = opt.update(g_phi, opt_state)
    return (optax.apply_updates(phi, updates), opt_state), None

  keys = jax.random.split(jax.random.key(7), steps)
  (phi, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
      (phi, opt.init(phi)), keys)
  return phi


# ---------------------------------------------------------------------------
# Unbiasedness.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("logits", BERNOULLI_LOGITS, ids=["scalar", "vector"])
def test_bernoulli_toy_unbiased(logits):
  exact = tucker_exact_grad(logits)
  for estimate in (rebar(tucker_f, logits, "bernoulli"),
                   relax(tucker_f, logits, "bernoulli", param_cv,
                         init_param_cv(logits.shape))):
    assert_unbiased(draws(lambda k, e=estimate: e(k)[0]), exact)


def test_categorical_coupled_toy_unbiased():
  exact = coupled_exact_grad(CATEGORICAL_LOGITS)
  for estimate in (rebar(coupled_f, CATEGORICAL_LOGITS, "categorical"),
                   relax(coupled_f, CATEGORICAL_LOGITS, "categorical",
                         param_cv, init_param_cv((3, 3)))):
    samples = draws(lambda k, e=estimate: e(k)[0])
    assert_unbiased(samples, exact)
    # The true gradient sums to zero over each row (softmax is invariant to
    # a shift of the logits); so does every estimate, since z uses the
    # normalised log-probabilities.
    np.testing.assert_allclose(samples.sum(axis=-1), 0.0, atol=1e-4)


# ---------------------------------------------------------------------------
# Variance reduction against plain REINFORCE (same f, same number of draws).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_lower_variance_than_reinforce(kind):
  if kind == "bernoulli":
    f, logits = tucker_f, BERNOULLI_LOGITS[1]
  else:
    f, logits = coupled_f, CATEGORICAL_LOGITS
  var_reinforce = total_variance(draws(lambda k: reinforce(f, logits, kind)(k)[0]))
  var_rebar = total_variance(draws(lambda k: rebar(f, logits, kind)(k)[0]))
  phi = train_param_cv(f, logits, kind)
  var_relax = total_variance(
      draws(lambda k: relax(f, logits, kind, param_cv, phi)(k)[0]))
  # Measured (R = 20,000): Bernoulli 0.29 / 0.11 / 0.003, categorical
  # 52 / 34 / 26 (REINFORCE / REBAR / RELAX). A single Bernoulli variable is
  # the exception: there REBAR with eta = 1 raises the variance (0.016 ->
  # 0.023 at lambda = 0.5, and at every lambda in [0.03, 2]).
  assert var_rebar < 0.8 * var_reinforce, (var_rebar, var_reinforce)
  assert var_relax < 0.6 * var_reinforce, (var_relax, var_reinforce)
  assert var_relax < var_rebar, (var_relax, var_rebar)


# ---------------------------------------------------------------------------
# Degenerate control variates: exact identities.
# ---------------------------------------------------------------------------


def _hard_samples(logits, kind, key, num_samples):
  _, _, b = E._discrete_draws(E._FAMILIES[kind], logits, key, num_samples)
  return b


def _distrax_log_prob(logits, b, kind):
  if kind == "bernoulli":
    return jnp.sum(distrax.Bernoulli(logits=logits).log_prob(b))
  return jnp.sum(distrax.OneHotCategorical(logits=logits).log_prob(b))


@pytest.mark.parametrize("kind,f,logits", [
    ("bernoulli", tucker_f, BERNOULLI_LOGITS[1]),
    ("categorical", coupled_f, CATEGORICAL_LOGITS)])
def test_zero_and_constant_control_variates_are_reinforce(kind, f, logits):
  key, num_samples = jax.random.key(3), 5
  b = _hard_samples(logits, kind, key, num_samples)
  # Oracle: the magic-box surrogate of Williams 1992 with distrax's log p.
  def reinforce_ref(baseline):
    def surrogate(l):
      log_p = jax.vmap(lambda bs: _distrax_log_prob(l, bs, kind))(b)
      return E.score_function_surrogate(log_p, jax.vmap(f)(b), baseline)
    return jax.grad(surrogate)(logits)

  g, g_phi = E.relax_grad(f, logits, key, control_variate=zero_cv,
                          cv_params=jnp.float32(0.0), kind=kind,
                          num_samples=num_samples)
  np.testing.assert_allclose(g, reinforce_ref(0.0), rtol=1e-5, atol=1e-6)
  g_rebar, g_cv = E.rebar_grad(f, logits, key, eta=0.0, log_temperature=0.3,
                               kind=kind, num_samples=num_samples)
  np.testing.assert_allclose(g_rebar, g, rtol=1e-6, atol=1e-7)
  assert g_cv["log_temperature"] == 0.0

  phi = jnp.float32(0.7)
  g, g_phi = E.relax_grad(f, logits, key, control_variate=zero_cv,
                          cv_params=phi, kind=kind, num_samples=num_samples)
  np.testing.assert_allclose(g, reinforce_ref(phi), rtol=1e-5, atol=1e-6)
  scores = jax.vmap(jax.grad(lambda l, bs: _distrax_log_prob(l, bs, kind)),
                    in_axes=(None, 0))(logits, b)
  exact_g_phi = jnp.mean(-2.0 * (jax.vmap(f)(b) - phi)
                         * jnp.sum(scores**2, axis=tuple(range(1, b.ndim))))
  np.testing.assert_allclose(g_phi, exact_g_phi, rtol=1e-5)


def test_zero_control_variate_matches_score_function_grad_statistics():
  """Same moments as E.score_function_grad (independent draws), within SE."""
  logits = BERNOULLI_LOGITS[1]
  ours = np.asarray(draws(lambda k: reinforce(tucker_f, logits, "bernoulli")(k)[0]))
  theirs = np.asarray(draws(lambda k: E.score_function_grad(
      tucker_f, lambda l: distrax.Bernoulli(logits=l), logits, k,
      num_samples=1), seed=2))
  diff_se = np.sqrt((ours.var(0) + theirs.var(0)) / R)
  assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) <= NUM_SE * diff_se)
  # Variances: the SE of a sample variance is sqrt((m4 - s^4) / n).
  def var_and_se(x):
    c = x - x.mean(0)
    return c.var(0), np.sqrt((np.mean(c**4, 0) - c.var(0) ** 2) / len(x))
  (v1, s1), (v2, s2) = var_and_se(ours), var_and_se(theirs)
  assert np.all(np.abs(v1 - v2) <= NUM_SE * np.hypot(s1, s2))


def test_hard_samples_follow_p():
  for kind, logits, p in (
      ("bernoulli", BERNOULLI_LOGITS[1], jax.nn.sigmoid(BERNOULLI_LOGITS[1])),
      ("categorical", CATEGORICAL_LOGITS,
       jax.nn.softmax(CATEGORICAL_LOGITS, axis=-1))):
    b = np.asarray(_hard_samples(logits, kind, jax.random.key(4), R))
    assert_unbiased(b, p)
    if kind == "categorical":
      np.testing.assert_array_equal(b.sum(-1), 1.0)


# ---------------------------------------------------------------------------
# The variance gradient.
# ---------------------------------------------------------------------------


def _central_differences(objective, params, step=1e-4):
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  grads = []
  for i in range(flat.size):
    e = jnp.zeros_like(flat).at[i].set(step)
    grads.append((objective(unravel(flat + e)) - objective(unravel(flat - e)))
                 / (2 * step))
  return unravel(jnp.stack(grads))


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_cv_variance_grad_matches_finite_differences(kind):
  with jax.enable_x64(True):
    if kind == "bernoulli":
      f, logits = tucker_f, BERNOULLI_LOGITS[1].astype(jnp.float64)
    else:
      f, logits = coupled_f, CATEGORICAL_LOGITS.astype(jnp.float64)
    keys = jax.random.split(jax.random.key(11), 64)  # Common random numbers.

    def relax_fn(phi):
      return jax.vmap(lambda k: E.relax_grad(
          f, logits, k, control_variate=param_cv, cv_params=phi,
          kind=kind))(keys)

    def rebar_fn(phi):
      return jax.vmap(lambda k: E.rebar_grad(
          f, logits, k, eta=phi["eta"],
          log_temperature=phi["log_temperature"], kind=kind))(keys)

    phi_relax = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                             init_param_cv(logits.shape))
    phi_rebar = {"eta": jnp.float64(0.8), "log_temperature": jnp.log(0.5)}
    for fn, phi in ((relax_fn, phi_relax), (rebar_fn, phi_rebar)):
      fn = jax.jit(fn)
      mean_sq = lambda p, fn=fn: jnp.mean(
          jnp.sum(fn(p)[0] ** 2, axis=tuple(range(1, logits.ndim + 1))))
      analytic = jax.tree.map(lambda x: x.mean(0), fn(phi)[1])
      numeric = _central_differences(mean_sq, phi)
      chex.assert_trees_all_close(analytic, numeric, rtol=1e-5, atol=1e-8)
      assert all(np.any(x != 0) for x in jax.tree.leaves(analytic))


# ---------------------------------------------------------------------------
# Structure: f never differentiated at b, extreme logits, jit, vmap.
# ---------------------------------------------------------------------------


def test_relax_never_differentiates_f():
  @jax.custom_jvp
  def trap(b):
    return jnp.sum((b - T) ** 2)

  @trap.defjvp
  def _trap_jvp(primals, tangents):
    raise AssertionError("relax_grad differentiated f")

  for kind, logits in (("bernoulli", BERNOULLI_LOGITS[1]),
                       ("categorical", CATEGORICAL_LOGITS)):
    g, g_phi = jax.jit(relax(trap, logits, kind, param_cv,
                             init_param_cv(logits.shape), num_samples=3))(
                                 jax.random.key(0))
    assert np.all(np.isfinite(g))
  # REBAR must differentiate f (at relaxed inputs): the trap fires.
  with pytest.raises(AssertionError, match="differentiated f"):
    rebar(trap, BERNOULLI_LOGITS[1], "bernoulli")(jax.random.key(0))


def test_extreme_logits_stay_finite_and_near_zero_gradient():
  cases = (("bernoulli", jnp.array([30.0, -30.0, 0.0]), tucker_f),
           ("categorical", jnp.array([[30.0, -30.0, 0.0], [0.0, 0.0, 0.0],
                                      [-30.0, -30.0, 30.0]]), coupled_f))
  for kind, logits, f in cases:
    for estimate in (rebar(f, logits, kind, temperature=0.1, num_samples=64),
                     relax(f, logits, kind, param_cv,
                           init_param_cv(logits.shape), num_samples=64)):
      g, g_cv = jax.jit(estimate)(jax.random.key(9))
      assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((g, g_cv)))
  # A (numerically) deterministic variable has a zero gradient: theta (1 -
  # theta) ~ 1e-13 at |l| = 30.
  g, _ = jax.jit(rebar(tucker_f, jnp.array([30.0, -30.0]), "bernoulli",
                       num_samples=64))(jax.random.key(9))
  np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_vmap_over_data_with_per_example_f_and_no_retrace():
  """The VAE pattern: per-example f closes over the datum; one trace."""
  targets = jnp.array([0.1, 0.45, 0.9])
  logits = jnp.array([[0.0, 1.0], [2.0, -1.0], [-0.5, 0.5]])
  keys = jax.random.split(jax.random.key(0), 3)
  phi = init_param_cv((2,))

  def per_example(target, logits_x, key_x):
    f = lambda b: jnp.sum((b - target) ** 2)
    g_relax, g_phi = E.relax_grad(f, logits_x, key_x, control_variate=param_cv,
                                  cv_params=phi, kind="bernoulli",
                                  num_samples=2)
    g_rebar, g_cv = E.rebar_grad(f, logits_x, key_x, eta=1.0,
                                 log_temperature=-0.5, kind="bernoulli")
    return g_relax, g_phi, g_rebar, g_cv

  chex.clear_trace_counter()
  batched = jax.jit(jax.vmap(chex.assert_max_traces(per_example, n=1)))
  out = batched(targets, logits, keys)
  for seed in range(3):
    batched(targets, logits, jax.random.split(jax.random.key(seed), 3))
  for i in range(3):
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[i], out),
        per_example(targets[i], logits[i], keys[i]), rtol=1e-5, atol=1e-6)

  # Chaining into encoder parameters with jax.vjp equals the chain rule.
  enc = jnp.array([[1.0, -2.0], [0.5, 0.3]])
  xs = jnp.array([[0.2, 0.1], [1.0, -1.0], [0.0, 0.5]])
  enc_logits, vjp = jax.vjp(lambda p: xs @ p, enc)
  g_logits = jax.vmap(per_example)(targets, enc_logits, keys)[0]
  (g_enc,) = vjp(g_logits)
  np.testing.assert_allclose(g_enc, xs.T @ g_logits, rtol=1e-5)


def test_num_samples_averages_independent_draws():
  logits = BERNOULLI_LOGITS[1]
  one = draws(lambda k: rebar(tucker_f, logits, "bernoulli")(k)[0], 4_000)
  four = draws(lambda k: rebar(tucker_f, logits, "bernoulli",
                               num_samples=4)(k)[0], 4_000, seed=3)
  assert_unbiased(four, tucker_exact_grad(logits))
  ratio = total_variance(one) / total_variance(four)
  assert 3.0 < ratio < 5.3, ratio  # 4 for independent draws.


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
  key = jax.random.key(0)
  logits = jnp.zeros(3)
  ok_relax = dict(control_variate=param_cv, cv_params=init_param_cv((3,)),
                  kind="bernoulli")
  with pytest.raises(ValueError, match="kind='gaussian'"):
    E.relax_grad(tucker_f, logits, key, control_variate=param_cv,
                 cv_params=init_param_cv((3,)), kind="gaussian")
  with pytest.raises(ValueError, match="kind='Bernoulli'"):
    E.rebar_grad(tucker_f, logits, key, eta=1.0, log_temperature=0.0,
                 kind="Bernoulli")
  with pytest.raises(ValueError, match="num_samples=0"):
    E.relax_grad(tucker_f, logits, key, num_samples=0, **ok_relax)
  with pytest.raises(TypeError, match="num_samples must be a Python int"):
    E.rebar_grad(tucker_f, logits, key, eta=1.0, log_temperature=0.0,
                 kind="bernoulli", num_samples=2.0)
  with pytest.raises(TypeError, match="logits must have a floating dtype"):
    E.relax_grad(tucker_f, jnp.zeros(3, jnp.int32), key, **ok_relax)
  with pytest.raises(TypeError, match="logits must have a floating dtype"):
    E.rebar_grad(tucker_f, jnp.zeros(3, jnp.int32), key, eta=1.0,
                 log_temperature=0.0, kind="bernoulli")
  with pytest.raises(ValueError, match=r"per-sample output of shape \(3,\)"):
    E.relax_grad(lambda b: b, logits, key, **ok_relax)
  with pytest.raises(ValueError, match=r"per-sample output of shape \(3,\)"):
    E.rebar_grad(lambda b: b, logits, key, eta=1.0, log_temperature=0.0,
                 kind="bernoulli")
  with pytest.raises(ValueError, match=r"control_variate.*shape \(3,\)"):
    E.relax_grad(tucker_f, logits, key, control_variate=lambda phi, z: z,
                 cv_params=0.0, kind="bernoulli")
  for bad in (-jnp.inf, jnp.nan, float("inf")):
    with pytest.raises(ValueError, match=f"log_temperature={bad!r}"):
      E.rebar_grad(tucker_f, logits, key, eta=1.0, log_temperature=bad,
                   kind="bernoulli")
  with pytest.raises(ValueError, match="eta=nan"):
    E.rebar_grad(tucker_f, logits, key, eta=float("nan"), log_temperature=0.0,
                 kind="bernoulli")
  with pytest.raises(ValueError, match=r"eta must be a scalar.*\(2,\)"):
    E.rebar_grad(tucker_f, logits, key, eta=jnp.ones(2), log_temperature=0.0,
                 kind="bernoulli")
  with pytest.raises(AssertionError):  # chex rank check: categorical needs K.
    E.rebar_grad(tucker_f, jnp.float32(0.0), key, eta=1.0,
                 log_temperature=0.0, kind="categorical")

"""Statistical tests of REBAR and RELAX (common/_estimators/control_variates).

Oracles (stated here, derived by hand or by exact enumeration):

* Bernoulli toy of Tucker et al. 2017 (t = 0.45): f(b) = sum_i (b_i - t)^2 with
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

import functools
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
from common._estimators import control_variates
from monte_carlo_checks import NUM_SE
from monte_carlo_checks import assert_mean_close as assert_unbiased

T = 0.45  # Tucker et al. 2017's target.
R = 20_000  # Repeats for means and variances.

BERNOULLI_LOGITS = jnp.array([0.0, 1.5, -2.0, 3.0])
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
  configs = jax.nn.one_hot(
      jnp.array(list(itertools.product(range(3), repeat=3))), 3)  # [27, 3, 3]

  def expectation(l):
    log_p = jnp.sum(configs * jax.nn.log_softmax(l, axis=-1), axis=(1, 2))
    return jnp.sum(jnp.exp(log_p) * jax.vmap(coupled_f)(configs))
  return jax.jit(jax.grad(expectation))(logits)


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
# Unbiasedness and variance reduction against plain REINFORCE. One set of
# R draws per (kind, estimator), shared by both tests (compiling the
# second-order programs dominates the run time).
# ---------------------------------------------------------------------------

TOYS = {"bernoulli": (tucker_f, BERNOULLI_LOGITS),
        "categorical": (coupled_f, CATEGORICAL_LOGITS)}
EXACT = {"bernoulli": tucker_exact_grad(BERNOULLI_LOGITS),
         "categorical": coupled_exact_grad(CATEGORICAL_LOGITS)}


@functools.cache
def toy_draws(kind, estimator):
  """R single-draw estimates [R, *logits.shape] on the toy of `kind`."""
  f, logits = TOYS[kind]
  if estimator == "reinforce":
    fn = reinforce(f, logits, kind)
  elif estimator == "rebar":  # eta = 1, lambda = 0.5.
    fn = rebar(f, logits, kind)
  else:  # RELAX with the parametric CV trained on its variance gradient.
    fn = relax(f, logits, kind, param_cv, trained_param_cv(kind))
  return np.asarray(draws(lambda k: fn(k)[0]))


@functools.cache
def trained_param_cv(kind):
  f, logits = TOYS[kind]
  return train_param_cv(f, logits, kind)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
@pytest.mark.parametrize("estimator", ["reinforce", "rebar", "relax"])
def test_unbiased_on_toys(kind, estimator):
  samples = toy_draws(kind, estimator)
  assert_unbiased(samples, EXACT[kind])
  if kind == "categorical":
    # The true gradient sums to zero over each row (softmax is invariant to
    # a shift of the logits); so does every estimate, since z uses the
    # normalised log-probabilities.
    np.testing.assert_allclose(samples.sum(axis=-1), 0.0, atol=1e-4)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_lower_variance_than_reinforce(kind):
  var_reinforce, var_rebar, var_relax = (
      total_variance(toy_draws(kind, name))
      for name in ("reinforce", "rebar", "relax"))
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
  _, _, b = control_variates._discrete_draws(
      control_variates._FAMILIES[kind], logits, key, num_samples)
  return b


def _distrax_log_prob(logits, b, kind):
  if kind == "bernoulli":
    return jnp.sum(distrax.Bernoulli(logits=logits).log_prob(b))
  return jnp.sum(distrax.OneHotCategorical(logits=logits).log_prob(b))


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_zero_and_constant_control_variates_are_reinforce(kind):
  f, logits = TOYS[kind]
  key, num_samples = jax.random.key(3), 5

  @jax.jit
  def ours_and_oracle(phi):
    g, g_phi = E.relax_grad(f, logits, key, control_variate=zero_cv,
                            cv_params=phi, kind=kind,
                            num_samples=num_samples)
    g_rebar, g_cv = E.rebar_grad(f, logits, key, eta=0.0,
                                 log_temperature=0.3, kind=kind,
                                 num_samples=num_samples)
    # Oracle: the magic-box surrogate of Williams 1992 with distrax's log p,
    # at the same hard samples b.
    b = _hard_samples(logits, kind, key, num_samples)
    f_b = jax.vmap(f)(b)
    def surrogate(l):
      log_p = jax.vmap(lambda bs: _distrax_log_prob(l, bs, kind))(b)
      return E.score_function_surrogate(log_p, f_b, phi)
    scores = jax.vmap(jax.grad(lambda l, bs: _distrax_log_prob(l, bs, kind)),
                      in_axes=(None, 0))(logits, b)
    sq_scores = jnp.sum(scores**2, axis=tuple(range(1, b.ndim)))
    exact_g_phi = jnp.mean(-2.0 * (f_b - phi) * sq_scores)
    return (g, g_phi, g_rebar, g_cv), (jax.grad(surrogate)(logits),
                                       exact_g_phi)

  (g, _, g_rebar, g_cv), (oracle, _) = ours_and_oracle(jnp.float32(0.0))
  np.testing.assert_allclose(g, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_rebar, g, rtol=1e-6, atol=1e-7)
  assert g_cv["log_temperature"] == 0.0
  assert g_cv["eta"] != 0.0
  (g, g_phi, _, _), (oracle, exact_g_phi) = ours_and_oracle(jnp.float32(0.7))
  np.testing.assert_allclose(g, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_phi, exact_g_phi, rtol=1e-5)


def test_zero_control_variate_matches_score_function_grad_statistics():
  """Same moments as E.score_function_grad (independent draws), within SE."""
  ours = toy_draws("bernoulli", "reinforce")
  theirs = np.asarray(draws(lambda k: E.score_function_grad(
      tucker_f, lambda l: distrax.Bernoulli(logits=l), BERNOULLI_LOGITS, k,
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
  for kind, p in (("bernoulli", jax.nn.sigmoid(BERNOULLI_LOGITS)),
                  ("categorical", jax.nn.softmax(CATEGORICAL_LOGITS, axis=-1))):
    b = np.asarray(jax.jit(
        lambda k, kind=kind: _hard_samples(TOYS[kind][1], kind, k, R))(
            jax.random.key(4)))
    assert_unbiased(b, p)
    assert set(np.unique(b)) == {0.0, 1.0}
    if kind == "categorical":
      np.testing.assert_array_equal(b.sum(-1), 1.0)


def test_conditional_sample_has_the_law_of_z_given_b():
  """z~ = z~(logits, v, b) is distributed as z given H(z) = b.

  Oracle: H(z~) = b for every draw, and for each value of b the mean and the
  variance of every coordinate of z~ match those of z within 5 SE (z and z~
  drawn with independent noise).
  """
  for kind, logits in (("bernoulli", BERNOULLI_LOGITS),
                       ("categorical", CATEGORICAL_LOGITS)):
    family = control_variates._FAMILIES[kind]

    @jax.jit
    def sample(key, family=family, logits=logits):
      u, v, b = control_variates._discrete_draws(family, logits, key, R)
      z = jax.vmap(family.relaxed, in_axes=(None, 0))(logits, u)
      z_tilde = jax.vmap(family.conditional, in_axes=(None, 0, 0))(
          logits, v, b)
      return b, z, z_tilde, family.hard(z_tilde)

    b, z, z_tilde, b_tilde = map(np.asarray, sample(jax.random.key(12)))
    np.testing.assert_array_equal(b_tilde, b)
    # z and z~ of different draws are independent, so compare z~ of draw r
    # with z of draw r' (a permutation) within each group b = value.
    perm = np.random.default_rng(0).permutation(R)
    b_other, z_other = b[perm], z[perm]
    if kind == "bernoulli":
      groups = [(b == value, b_other == value) for value in (0.0, 1.0)]
    else:
      groups = [(b[:, i, k] == 1, b_other[:, i, k] == 1)
                for i in range(3) for k in range(3)]
    for mask_t, mask_z in groups:
      for stat in (lambda x: x, lambda x: (x - x.mean(0)) ** 2):
        xt, xz = stat(z_tilde[mask_t]), stat(z_other[mask_z])
        se = np.sqrt(xt.var(0) / len(xt) + xz.var(0) / len(xz))
        assert np.all(np.abs(xt.mean(0) - xz.mean(0)) <= NUM_SE * se), (
            kind, xt.mean(0), xz.mean(0), se)


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


@pytest.mark.parametrize("kind,estimator", [("bernoulli", "rebar"),
                                             ("categorical", "relax")])
def test_cv_variance_grad_matches_finite_differences(kind, estimator):
  with jax.enable_x64(True):
    f, logits = TOYS[kind]
    logits = logits.astype(jnp.float64)
    keys = jax.random.split(jax.random.key(11), 32)  # Common random numbers.
    if estimator == "relax":
      phi = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                         init_param_cv(logits.shape))
      one = lambda p, k: E.relax_grad(f, logits, k, control_variate=param_cv,
                                      cv_params=p, kind=kind)
    else:
      phi = {"eta": jnp.float64(0.8), "log_temperature": jnp.log(0.5)}
      one = lambda p, k: E.rebar_grad(
          f, logits, k, eta=p["eta"], log_temperature=p["log_temperature"],
          kind=kind)
    # Per-key (g [32, ...], cv gradient [32, ...]) for the same 32 keys.
    estimates = jax.jit(lambda p: jax.vmap(lambda k: one(p, k))(keys))

    def mean_sq(p):
      g = estimates(p)[0]
      return jnp.mean(jnp.sum(g**2, axis=tuple(range(1, g.ndim))))

    analytic = jax.tree.map(lambda x: x.mean(0), estimates(phi)[1])
    numeric = _central_differences(mean_sq, phi)
    chex.assert_trees_all_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert all(np.all(x != 0) for x in jax.tree.leaves(analytic))


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

  g, _ = jax.jit(relax(trap, CATEGORICAL_LOGITS, "categorical", param_cv,
                       init_param_cv((3, 3)), num_samples=3))(
                           jax.random.key(0))
  assert np.all(np.isfinite(g))
  # REBAR must differentiate f (at relaxed inputs): the trap fires.
  with pytest.raises(AssertionError, match="differentiated f"):
    jax.jit(rebar(trap, BERNOULLI_LOGITS, "bernoulli"))(jax.random.key(0))


def test_extreme_logits_stay_finite_and_near_zero_gradient():
  bernoulli_logits = jnp.array([30.0, -30.0, 0.0])
  categorical_logits = jnp.array([[30.0, -30.0, 0.0], [0.0, 0.0, 0.0],
                                  [-30.0, -30.0, 30.0]])

  @jax.jit
  def estimates(key):
    k1, k2 = jax.random.split(key)
    return (rebar(tucker_f, bernoulli_logits, "bernoulli", temperature=0.1,
                  num_samples=64)(k1),
            relax(coupled_f, categorical_logits, "categorical", param_cv,
                  init_param_cv((3, 3)), num_samples=64)(k2))

  out = estimates(jax.random.key(9))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
  # (Numerically) deterministic variables have a zero gradient: theta (1 -
  # theta) ~ 1e-13 at |l| = 30.
  np.testing.assert_allclose(out[0][0][:2], 0.0, atol=1e-6)
  np.testing.assert_allclose(out[1][0][2], 0.0, atol=1e-6)


def test_vmap_over_data_with_per_example_f_and_no_retrace():
  """The VAE pattern: per-example f closes over the datum; one trace."""
  targets = jnp.array([0.1, 0.45, 0.9])
  enc = jnp.array([[1.0, -2.0], [0.5, 0.3]])
  xs = jnp.array([[0.2, 0.1], [1.0, -1.0], [0.0, 0.5]])
  phi = init_param_cv((2,))

  def per_example(target, logits_x, key_x):
    # REBAR shares this code path (it is RELAX with its own control variate).
    f = lambda b: jnp.sum((b - target) ** 2)
    return E.relax_grad(f, logits_x, key_x, control_variate=param_cv,
                        cv_params=phi, kind="bernoulli", num_samples=2)

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(enc, key):
    """Encoder-parameter gradients of the batch-mean objective, by jax.vjp."""
    logits, encoder_vjp = jax.vjp(lambda p: xs @ p, enc)
    out = jax.vmap(per_example)(targets, logits,
                                jax.random.split(key, len(xs)))
    (g_enc,) = encoder_vjp(out[0] / len(xs))
    return logits, out, g_enc

  for seed in range(3):
    step(enc, jax.random.key(seed))
  logits, out, g_enc = step(enc, jax.random.key(0))
  # The chain rule by hand: logits = xs @ enc.
  np.testing.assert_allclose(g_enc, xs.T @ out[0] / len(xs), rtol=1e-5)
  single = jax.jit(per_example)
  keys = jax.random.split(jax.random.key(0), len(xs))
  for i in range(len(xs)):
    chex.assert_trees_all_close(
        jax.tree.map(lambda x, i=i: x[i], out),
        single(targets[i], logits[i], keys[i]), rtol=1e-5, atol=1e-6)


def test_num_samples_averages_independent_draws():
  four = np.asarray(draws(lambda k: rebar(
      tucker_f, BERNOULLI_LOGITS, "bernoulli", num_samples=4)(k)[0],
                          R // 4, seed=3))
  assert_unbiased(four, tucker_exact_grad(BERNOULLI_LOGITS))
  ratio = total_variance(toy_draws("bernoulli", "rebar")) / total_variance(four)
  assert 3.4 < ratio < 4.6, ratio  # 4 for independent draws.


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
  with pytest.raises(ValueError, match=r"logits must have at least 1 axes.*"
                     r"shape \(\)"):  # Categorical logits need a class axis.
    E.rebar_grad(tucker_f, jnp.float32(0.0), key, eta=1.0,
                 log_temperature=0.0, kind="categorical")
  with pytest.raises(TypeError, match="kind must be a string.*got None"):
    E.relax_grad(tucker_f, logits, key, control_variate=param_cv,
                 cv_params=init_param_cv((3,)), kind=None)
  with pytest.raises(TypeError, match="eta must be a real number; got "
                     "eta='1'"):
    E.rebar_grad(tucker_f, logits, key, eta="1", log_temperature=0.0,
                 kind="bernoulli")
  with pytest.raises(ValueError, match=r"log_temperature must be a scalar.*"
                     r"\(3,\)"):  # Also checked when traced.
    jax.jit(lambda t: E.rebar_grad(
        tucker_f, logits, key, eta=1.0, log_temperature=t,
        kind="bernoulli"))(jnp.zeros(3))

"""Cost and variance of the gradient estimators in common/estimators.py.

Three toys, each run in this process with its estimators side by side:

  mlp       f is a fixed MLP R^128 -> R (128-256-256-1, tanh; 99,073
            parameters) and x ~ N(mean, diag(exp(log_std))^2) over its input;
            grad_{mean, log_std} E[f(x)] (256 numbers) by pathwise_grad,
            score_function_grad (also with the leave-one-out baseline) and a
            hand-written jax.grad of the same batched loss (the baseline,
            same noise and MLP).
  gamma     z ~ Gamma(a, b) elementwise in 8 dimensions, a from 0.3 to 4,
            f(z) = sum_i w_i log(1 + z_i) + sin(sum_i z_i) / 2; grad_{a, b}
            E[f(z)] (16 numbers) by implicit reparameterization
            (pathwise_grad on distrax.Gamma, the baseline), RSVI
            (gamma_rejection_grad, shape augmentation B = 1 and 3), G-REP
            (gamma_generalized_reparam_grad) and the score function.
  gaussian  x ~ N(mean, diag(scale^2)) in 16 dimensions,
            f(x) = sum_i w_i sin(x_i) + (v . x)^2 / 16; grad_{mean, scale}
            E[f(x)] (32 numbers) by pathwise_grad (the baseline),
            score_function_grad and measure_valued_grad (coupled and not;
            4 x 16 = 64 evaluations of f per sample).

For each estimator and each number of samples S it prints:
  - wall time per gradient estimate (jitted), median and minimum over
    rounds in which every estimator of the table is called once, in
    alternating order; its ratio to the baseline's time as the median over
    rounds of the per-round ratio ("x base med") and as the ratio of the
    minima ("x base min"),
  - total gradient variance: the sum over coordinates of the variance of the
    S-sample estimate over independent repeats (common random numbers across
    estimators), and its ratio to the baseline's,
  - max |z|: the largest standardized difference between its mean and the
    baseline's mean over the coordinates (|z| < ~4 for unbiased estimators;
    the mlp toy has no unbiasedness check).

Run:  python -m benchmarks.estimators
      python -m benchmarks.estimators --toys=gamma --toys=gaussian \
          --repeats=400
      python -m benchmarks.estimators --repeats=200 --timing_runs=300
"""

import functools
import statistics
import time

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import command_line
from common import estimators as E

INPUT_DIM = 128
TOYS = ("mlp", "gamma", "gaussian")

FLAGS = flags.FlagValues()
_TOYS = flags.DEFINE_multi_enum("toys", list(TOYS), TOYS,
                                "A toy to run; repeat the flag for several.",
                                flag_values=FLAGS)
_SAMPLES = command_line.define_integer_list(
    "samples", [1, 10, 100, 1000], "num_samples values of the mlp toy.",
    FLAGS)
_TOY_SAMPLES = command_line.define_integer_list(
    "toy_samples", [1, 100], "num_samples values of the gamma and gaussian "
    "toys.", FLAGS)
_REPEATS = flags.DEFINE_integer(
    "repeats", 100, "Independent estimates per variance figure.",
    flag_values=FLAGS)
_TIMING_RUNS = flags.DEFINE_integer(
    "timing_runs", 100, "Timed rounds per table.", flag_values=FLAGS)


class MLP(nn.Module):
  """f: R^128 -> R, the function whose expectation is differentiated."""

  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(256)(x))
    x = nn.tanh(nn.Dense(256)(x))
    return nn.Dense(1)(x)[..., 0]


def make_problem():
  mlp = MLP()
  mlp_params = mlp.init(jax.random.key(0), jnp.zeros((1, INPUT_DIM)))
  n_params = sum(x.size for x in jax.tree.leaves(mlp_params))
  f = lambda x: mlp.apply(mlp_params, x)
  dist_params = {"mean": 0.1 * jnp.ones(INPUT_DIM),
                 "log_std": jnp.full((INPUT_DIM,), -0.5)}
  dist_fn = lambda p: distrax.MultivariateNormalDiag(p["mean"],
                                                     jnp.exp(p["log_std"]))
  return f, dist_fn, dist_params, n_params


def estimators(f, dist_fn, dist_params, num_samples):
  """name -> key -> gradient pytree, for one num_samples (the mlp toy)."""
  out = {
      "pathwise": functools.partial(E.pathwise_grad, f, dist_fn, dist_params,
                                    num_samples=num_samples),
      "score_function": functools.partial(E.score_function_grad, f, dist_fn,
                                          dist_params, num_samples=num_samples),
  }
  if num_samples >= 2:
    out["score_function_loo"] = functools.partial(
        E.score_function_grad, f, dist_fn, dist_params,
        num_samples=num_samples, baseline="leave_one_out")

  def hand_written(key):
    """The baseline: jax.grad of the batched loss, same noise as pathwise."""
    def loss(p):
      x = dist_fn(p).sample(seed=key, sample_shape=(num_samples,))
      return jnp.mean(f(x))
    return jax.grad(loss)(dist_params)

  out["hand_written_grad"] = hand_written
  return out


# --------------------------------------------------------------------------
# The gamma and gaussian toys.
# --------------------------------------------------------------------------

GAMMA_CONCENTRATION = jnp.linspace(0.3, 4.0, 8)
GAMMA_RATE = jnp.full((8,), 1.5)
GAMMA_WEIGHTS = jnp.linspace(-1.0, 1.0, 8)
GAUSSIAN_MEAN = jnp.linspace(-1.0, 1.0, 16)
GAUSSIAN_SCALE = jnp.full((16,), 0.7)
GAUSSIAN_WEIGHTS = jnp.cos(jnp.arange(16.0))
GAUSSIAN_V = jnp.sin(jnp.arange(16.0))


def gamma_f(z):
  return jnp.sum(GAMMA_WEIGHTS * jnp.log1p(z)) + 0.5 * jnp.sin(jnp.sum(z))


def gaussian_f(x):
  return (jnp.sum(GAUSSIAN_WEIGHTS * jnp.sin(x))
          + jnp.dot(GAUSSIAN_V, x) ** 2 / x.size)


def _as_pair(grads):
  """A {"a": ..., "b": ...} gradient dict as the (g_a, g_b) pair."""
  return grads["a"], grads["b"]


def gamma_estimators(num_samples):
  """name -> key -> (grad_concentration, grad_rate); the first is the
  baseline (implicit reparameterization)."""
  params = {"a": GAMMA_CONCENTRATION, "b": GAMMA_RATE}
  dist_fn = lambda p: distrax.Gamma(p["a"], p["b"])
  baseline = "leave_one_out" if num_samples >= 2 else None
  out = {
      "implicit": lambda key: _as_pair(E.pathwise_grad(
          gamma_f, dist_fn, params, key, num_samples=num_samples)),
  }
  for b in (1, 3):
    out[f"rsvi_B{b}"] = functools.partial(
        E.gamma_rejection_grad, gamma_f, GAMMA_CONCENTRATION, GAMMA_RATE,
        num_samples=num_samples, shape_augmentation=b)
  out["grep"] = functools.partial(
      E.gamma_generalized_reparam_grad, gamma_f, GAMMA_CONCENTRATION,
      GAMMA_RATE, num_samples=num_samples)
  out["score_function"] = lambda key: _as_pair(E.score_function_grad(
      gamma_f, dist_fn, params, key, num_samples=num_samples,
      baseline=baseline))
  return out


def gaussian_estimators(num_samples):
  """name -> key -> (grad_mean, grad_scale); the first is the baseline
  (pathwise)."""
  params = {"a": GAUSSIAN_MEAN, "b": GAUSSIAN_SCALE}
  dist_fn = lambda p: distrax.Normal(p["a"], p["b"])
  baseline = "leave_one_out" if num_samples >= 2 else None
  out = {
      "pathwise": lambda key: _as_pair(E.pathwise_grad(
          gaussian_f, dist_fn, params, key, num_samples=num_samples)),
      "score_function": lambda key: _as_pair(E.score_function_grad(
          gaussian_f, dist_fn, params, key, num_samples=num_samples,
          baseline=baseline)),
  }
  for coupling in (True, False):
    name = "measure_valued" + ("" if coupling else "_uncoupled")
    out[name] = functools.partial(
        E.measure_valued_grad, gaussian_f, GAUSSIAN_MEAN, GAUSSIAN_SCALE,
        num_samples=num_samples, coupling=coupling)
  return out


# --------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------


def time_per_call(fns, runs, baseline):
  """Wall times of jitted key -> pytree functions, interleaved.

  All functions are compiled first, then timed in rounds (one call of each
  per round, the order reversed every other round), so load from other
  processes and position in the round affect them alike. Returns name ->
  (median s, min s, median over rounds of time / baseline time in the same
  round, min time / min baseline time).
  """
  jitted = {name: jax.jit(fn) for name, fn in fns.items()}
  for fn in jitted.values():
    jax.block_until_ready(fn(jax.random.key(0)))
  times = {name: [] for name in fns}
  names = list(jitted)
  for i in range(runs):
    key = jax.random.key(i + 1)
    for name in (names if i % 2 == 0 else names[::-1]):
      fn = jitted[name]
      start = time.perf_counter()
      jax.block_until_ready(fn(key))
      times[name].append(time.perf_counter() - start)
  out = {}
  for name, t in times.items():
    ratios = [x / y for x, y in zip(t, times[baseline])]
    out[name] = (statistics.median(t), min(t), statistics.median(ratios),
                 min(t) / min(times[baseline]))
  return out


def moments(fn, repeats):
  """(per-coordinate means, per-coordinate variances) over `repeats` keys."""
  result = jax.jit(lambda key: E.grad_moments(
      fn, key, num_repeats=repeats, batch_size=min(repeats, 50)))(
          jax.random.key(123))
  flat = lambda tree: np.concatenate(
      [np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])
  return flat(result.mean), flat(result.variance)


def total_variance(fn, repeats):
  return float(np.sum(moments(fn, repeats)[1]))


def max_z(means, variances, base_means, base_variances, repeats):
  se = np.sqrt((variances + base_variances) / repeats)
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(se > 0, np.abs(means - base_means) / se, 0.0)
  return float(np.max(z))


def run_toy(name, make_estimators, samples, repeats, timing_runs):
  header = (f"{'estimator':<26} {'S':>4} {'ms median':>10} {'ms min':>8} "
            f"{'x base med':>10} {'x base min':>10} {'total var':>11} "
            f"{'var x base':>10} {'max |z|':>8}")
  print(f"\n[{name}]")
  print(header)
  print("-" * len(header))
  for s in samples:
    fns = make_estimators(s)
    base = next(iter(fns))
    timings = time_per_call(fns, timing_runs, base)
    stats = {n: moments(fn, repeats) for n, fn in fns.items()}
    base_mean, base_var = stats[base]
    for n, (mean, var) in stats.items():
      median, minimum, ratio_median, ratio_min = timings[n]
      z = max_z(mean, var, base_mean, base_var, repeats)
      label = n + (" (baseline)" if n == base else "")
      print(f"{label:<26} {s:>4} {1e3 * median:>10.3f} {1e3 * minimum:>8.3f} "
            f"{ratio_median:>9.2f}x {ratio_min:>9.2f}x {np.sum(var):>11.4g} "
            f"{np.sum(var) / np.sum(base_var):>9.3g}x {z:>8.2f}")


def run_mlp(samples, repeats, timing_runs):
  f, dist_fn, dist_params, n_params = make_problem()
  print(f"\n[mlp] f: MLP with {n_params:,} parameters; Gaussian over its "
        f"{INPUT_DIM}-d input")
  header = (f"{'estimator':<20} {'S':>5} {'ms median':>10} {'ms min':>8} "
            f"{'total variance':>15} {'vs pathwise':>12}")
  print(header)
  print("-" * len(header))
  overheads = {}
  for s in samples:
    fns = estimators(f, dist_fn, dist_params, s)
    timings = time_per_call(fns, timing_runs, "hand_written_grad")
    overheads[s] = timings["pathwise"][2:]
    variances = {name: total_variance(fn, repeats)
                 for name, fn in fns.items() if name != "hand_written_grad"}
    for name, var in variances.items():
      median, minimum = timings[name][:2]
      print(f"{name:<20} {s:>5} {1e3 * median:>10.3f} {1e3 * minimum:>8.3f} "
            f"{var:>15.4g} {var / variances['pathwise']:>11.1f}x")
  print()
  print("pathwise_grad time / hand-written jax.grad time (median of per-round "
        "ratios, ratio of minima):")
  for s, (ratio_median, ratio_min) in overheads.items():
    print(f"  S={s:<5} {ratio_median:.3f}x  {ratio_min:.3f}x")


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  toys = set(_TOYS.value)
  repeats, timing_runs = _REPEATS.value, _TIMING_RUNS.value
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"{repeats} repeats per variance, {timing_runs} timing rounds")
  if "mlp" in toys:
    run_mlp(_SAMPLES.value, repeats, timing_runs)
  if "gamma" in toys:
    run_toy("gamma: z ~ Gamma(a, 1.5), 8-d, a in [0.3, 4]", gamma_estimators,
            _TOY_SAMPLES.value, repeats, timing_runs)
  if "gaussian" in toys:
    run_toy("gaussian: x ~ N(mean, 0.7^2), 16-d", gaussian_estimators,
            _TOY_SAMPLES.value, repeats, timing_runs)


if __name__ == "__main__":
  main()

"""Cost and variance of the gradient estimators in common/estimators.py.

Setting: f is a fixed MLP R^128 -> R (128-256-256-1, tanh; 99,073 parameters)
and x ~ N(mean, diag(exp(log_std))^2) over its input; the estimators give
grad_{mean, log_std} E[f(x)] (256 numbers). For each estimator and each
num_samples S it prints:
  - wall time per gradient estimate (jitted, median over repeats),
  - total gradient variance: the sum over the 256 coordinates of the variance
    of the S-sample estimate, over independent repeats (common random numbers
    across estimators),
  - for pathwise_grad, the overhead against a hand-written jax.grad of the
    same batched loss (same noise, same MLP), timed in the same run.

Run:  python -m benchmarks.estimators            (about 1-2 minutes on 2 cores)
      python -m benchmarks.estimators --repeats=200 --timing_runs=300
      python -m benchmarks.estimators --samples=1,10
"""

import functools
import statistics
import time

from absl import flags
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import command_line
from common import estimators as E

FLAGS = flags.FlagValues()
_SAMPLES = command_line.define_integer_list(
    "samples", [1, 10, 100, 1000], "Samples per estimate (S).", FLAGS)
_REPEATS = flags.DEFINE_integer(
    "repeats", 100, "Independent estimates per variance figure.",
    flag_values=FLAGS)
_TIMING_RUNS = flags.DEFINE_integer(
    "timing_runs", 100, "Timed calls per estimator.", flag_values=FLAGS)

INPUT_DIM = 128


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
  """name -> key -> gradient pytree, for one num_samples."""
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


def time_per_call(fns, runs):
  """Median wall time of each jitted key -> pytree function.

  All functions are compiled first, then timed in interleaved rounds (one call
  of each per round, the order reversed every other round), so load from other
  processes and position in the round affect them alike and the ratios between
  them stay meaningful on a shared machine.
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
  return {name: statistics.median(t) for name, t in times.items()}


def total_variance(fn, repeats):
  moments = jax.jit(lambda key: E.grad_moments(
      fn, key, num_repeats=repeats, batch_size=min(repeats, 50)))(
          jax.random.key(123))
  return float(sum(jnp.sum(v) for v in jax.tree.leaves(moments.variance)))


def main(argv=None):
  command_line.parse(FLAGS, argv, doc=__doc__)
  f, dist_fn, dist_params, n_params = make_problem()
  print(f"f: MLP with {n_params:,} parameters; Gaussian over its "
        f"{INPUT_DIM}-d input; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}")
  header = (f"{'estimator':<20} {'S':>5} {'ms/estimate':>12} "
            f"{'total variance':>15} {'vs pathwise':>12}")
  print(header)
  print("-" * len(header))
  overheads = {}
  for s in _SAMPLES.value:
    fns = estimators(f, dist_fn, dist_params, s)
    timings = time_per_call(fns, _TIMING_RUNS.value)
    overheads[s] = timings["pathwise"] / timings["hand_written_grad"]
    variances = {name: total_variance(fn, _REPEATS.value)
                 for name, fn in fns.items() if name != "hand_written_grad"}
    for name, var in variances.items():
      print(f"{name:<20} {s:>5} {1e3 * timings[name]:>12.3f} "
            f"{var:>15.4g} {var / variances['pathwise']:>11.1f}x")
  print()
  print("pathwise_grad time / hand-written jax.grad time:")
  for s, ratio in overheads.items():
    print(f"  S={s:<5} {ratio:.3f}x")


if __name__ == "__main__":
  main()

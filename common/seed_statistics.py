"""Ablation seed statistics: IQM, stratified bootstrap CIs, paired differences.

All functions are NumPy/SciPy, deterministic given their `seed`, and never
touch NumPy's global generator.

- `iqm`: the interquartile mean, `scipy.stats.trim_mean(x, 0.25)` (the mean
  of the middle 50% of the values; Agarwal et al. 2021, Sec. 4.3).
- `sample_std`: the sample standard deviation, ddof = 1.
- `stratified_bootstrap_ci`: a percentile bootstrap confidence interval
  whose resamples draw with replacement *within* each stratum (for example
  the seeds of each task of a multi-task aggregate), so every resample keeps
  each stratum's size (Agarwal et al. 2021, Sec. 4.1, "stratified
  bootstrap"; Efron & Tibshirani 1993, Sec. 13.3, percentile interval).
  It is `scipy.stats.bootstrap` with one sample per stratum: SciPy resamples
  the samples of a multi-sample statistic independently of each other, which
  is exactly the stratified scheme, and it draws from the `numpy.random.
  Generator` seeded here.
- `paired_difference`: A - B on the seeds both conditions share, with the
  mean difference, its bootstrap CI and the sample std of the differences.

Coverage. The percentile interval is a large-sample interval. For the mean
of n normal values it is about xbar +- z * s * sqrt((n - 1) / n) / sqrt(n),
whose coverage is P(|t_{n-1}| < z sqrt((n - 1) / n)): 0.75 at n = 3, 0.85 at
n = 5, 0.90 at n = 10, 0.95 only for large n (`normal_coverage` computes it;
the tests check it by simulation). Reports with 3-5 seeds therefore state
this nominal-vs-actual coverage next to their intervals.

References:
  Agarwal, Schwarzer, Castro, Courville, Bellemare. Deep Reinforcement
  Learning at the Edge of the Statistical Precipice. NeurIPS 2021.
  Efron, Tibshirani. An Introduction to the Bootstrap. Chapman & Hall, 1993.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats

NUM_RESAMPLES = 2000  # Bootstrap resamples used by the reports.


def _as_1d(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array; got shape "
                     f"{x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite; got {x.tolist()}.")
  return x


def iqm(x, axis: int = -1):
  """Interquartile mean along `axis`: `scipy.stats.trim_mean(x, 0.25)`.

  Cuts floor(n / 4) values from each end and averages the rest, so for n < 4
  it is the plain mean.

  Example:
    >>> float(iqm([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0]))
    3.5
  """
  return stats.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def sample_std(x) -> float:
  """Sample standard deviation (ddof = 1) of a 1-D array of >= 2 values.

  Example:
    >>> sample_std([1.0, 2.0, 3.0, 4.0])
    1.2909944487358056
  """
  x = _as_1d(x, "x")
  if x.size < 2:
    raise ValueError(f"sample_std needs >= 2 values; got {x.tolist()}.")
  return float(np.std(x, ddof=1))


def stratified_bootstrap_ci(
    strata: Sequence, *, statistic: Callable = iqm,
    confidence_level: float = 0.95, num_resamples: int = NUM_RESAMPLES,
    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Percentile bootstrap CI of `statistic` over the pooled strata.

  Args:
    strata: K arrays of shape [n_k, ...]: axis 0 holds the resampled units
      (seeds) of stratum k; trailing axes (for example evaluation steps) are
      batch axes with one interval each and must agree across strata.
      Each n_k >= 2.
    statistic: vectorized f(x, axis) reducing `axis` (the pooled units), e.g.
      `iqm` or `np.mean`.
    confidence_level: two-sided level in (0, 1).
    num_resamples: bootstrap resamples (>= 100).
    seed: seeds the `numpy.random.Generator` drawing the resamples.

  Returns:
    (low, high), each of the trailing shape (a 0-d array for 1-D strata).

  Example:
    >>> low, high = stratified_bootstrap_ci(
    ...     [[1.0, 2.0, 3.0], [10.0, 11.0, 12.0]], statistic=np.mean, seed=0)
    >>> bool(low < 6.5 < high)
    True
  """
  if not 0.0 < confidence_level < 1.0:
    raise ValueError(f"confidence_level must be in (0, 1); got "
                     f"{confidence_level!r}.")
  if isinstance(num_resamples, bool) or not isinstance(
      num_resamples, int) or num_resamples < 100:
    raise ValueError(f"num_resamples must be an int >= 100; got "
                     f"{num_resamples!r}.")
  if len(strata) == 0:
    raise ValueError("strata must hold at least one stratum; got none.")
  arrays = [np.asarray(s, dtype=np.float64) for s in strata]
  for k, a in enumerate(arrays):
    if a.ndim == 0 or a.shape[0] < 2:
      raise ValueError(f"stratum {k} needs >= 2 units along axis 0; got "
                       f"shape {a.shape}.")
    if a.shape[1:] != arrays[0].shape[1:]:
      raise ValueError(f"stratum {k} has trailing shape {a.shape[1:]}; "
                       f"stratum 0 has {arrays[0].shape[1:]}.")
    if not np.all(np.isfinite(a)):
      raise ValueError(f"stratum {k} holds non-finite values.")

  def pooled(*samples, axis):
    return statistic(np.concatenate(samples, axis=axis), axis=axis)

  result = stats.bootstrap(
      tuple(arrays), pooled, n_resamples=num_resamples, vectorized=True,
      axis=0, confidence_level=confidence_level, method="percentile",
      rng=np.random.default_rng(seed))
  return (np.asarray(result.confidence_interval.low),
          np.asarray(result.confidence_interval.high))


class PairedDifference(NamedTuple):
  """A - B over the seeds both conditions ran."""
  seeds: tuple[int, ...]   # The shared seeds, ascending.
  differences: np.ndarray  # [n] A - B per shared seed.
  mean: float              # Mean difference.
  ci: tuple[float, float] | None  # 95% percentile bootstrap CI; None if n < 2.
  std: float | None        # Sample std (ddof = 1) of the differences.

  @property
  def excludes_zero(self) -> bool:
    """True if the CI lies strictly on one side of 0."""
    return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


def paired_difference(a: dict[int, float], b: dict[int, float], *,
                      seed: int, num_resamples: int = NUM_RESAMPLES
                      ) -> PairedDifference:
  """Differences a[s] - b[s] on the seeds s present in both (seed -> value).

  The CI is the percentile bootstrap of the mean difference, resampling
  seeds (pairs stay together), from a generator seeded with `seed`.

  Example:
    >>> d = paired_difference({0: 3.0, 1: 5.0, 2: 4.0}, {0: 1.0, 1: 2.0},
    ...                       seed=0)
    >>> d.seeds, d.differences.tolist(), d.mean
    ((0, 1), [2.0, 3.0], 2.5)
  """
  shared = tuple(sorted(set(a) & set(b)))
  if not shared:
    raise ValueError(f"no shared seeds: A has {sorted(a)}, B has {sorted(b)}.")
  diffs = np.array([a[s] - b[s] for s in shared], dtype=np.float64)
  _as_1d(diffs, "differences")
  if len(shared) < 2:
    return PairedDifference(shared, diffs, float(diffs.mean()), None, None)
  low, high = stratified_bootstrap_ci([diffs], statistic=np.mean, seed=seed,
                                      num_resamples=num_resamples)
  return PairedDifference(shared, diffs, float(diffs.mean()),
                          (float(low), float(high)), sample_std(diffs))


def normal_coverage(n: int, confidence_level: float = 0.95) -> float:
  """Large-sample coverage of the percentile CI of a mean of n normal values.

  P(|T| < z sqrt((n - 1) / n)) with T ~ t_{n-1} and z the normal quantile:
  the percentile interval is approximately xbar +- z * sigma_hat / sqrt(n)
  with the plug-in (ddof = 0) sigma_hat (Efron & Tibshirani 1993, Sec. 13.3).

  Example:
    >>> round(normal_coverage(10), 3)
    0.904
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise ValueError(f"n must be an int >= 2; got {n!r}.")
  z = stats.norm.ppf(0.5 + confidence_level / 2)
  return float(2 * stats.t.cdf(z * math.sqrt((n - 1) / n), n - 1) - 1)

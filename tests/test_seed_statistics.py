"""Tests of common/seed_statistics.py: IQM, sample std, bootstrap CIs.

Oracles: hand-worked samples (the trimmed values of the IQM; the exact
bootstrap distribution of a 2-value sample, whose percentile interval is the
pair itself), SciPy's own functions, an explicit loop resampler, and the
large-sample coverage of the percentile interval of a normal mean,
P(|t_{n-1}| < 1.96 sqrt((n - 1) / n)): 0.904 at n = 10, 0.946 at n = 100.
Coverage is checked over 200 seeded replications within 4 binomial standard
errors. Every seed is fixed.
"""

import math

import numpy as np
import pytest
from scipy import stats

from common import seed_statistics as S


def test_iqm_hand_worked():
  # Sorted: -50 1 | 2 3 4 5 | 6 100: floor(8 / 4) = 2 cut from each end.
  assert S.iqm([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0]) == 3.5
  # n = 10: 2 cut from each end, mean of the middle 6 sorted values.
  x = np.array([9.0, 0.0, 7.0, 1.0, 8.0, 2.0, 6.0, 3.0, 5.0, 4.0])
  assert S.iqm(x) == pytest.approx((2 + 3 + 4 + 5 + 6 + 7) / 6, abs=1e-12)
  # n < 4 cuts nothing: the plain mean.
  assert S.iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0, abs=1e-12)


def test_iqm_matches_scipy_and_is_vectorized():
  x = np.random.default_rng(0).normal(size=(7, 13))
  np.testing.assert_allclose(S.iqm(x, axis=0), stats.trim_mean(x, 0.25, axis=0),
                             rtol=0, atol=0)
  np.testing.assert_allclose(S.iqm(x)[2], stats.trim_mean(x[2], 0.25))


def test_sample_std_is_ddof_1():
  x = [1.0, 2.0, 3.0, 4.0]
  assert S.sample_std(x) == pytest.approx(math.sqrt(5.0 / 3.0), abs=1e-12)
  assert S.sample_std(x) != pytest.approx(np.std(x))  # Not the population std.
  with pytest.raises(ValueError, match=r"needs >= 2 values; got \[1.0\]"):
    S.sample_std([1.0])


def test_ci_of_two_values_is_the_pair():
  """Resampled means of {a, b}: a w.p. 1/4, (a+b)/2 w.p. 1/2, b w.p. 1/4."""
  low, high = S.stratified_bootstrap_ci([[2.0, 7.0]], statistic=np.mean,
                                        seed=3)
  assert (float(low), float(high)) == (2.0, 7.0)


def test_ci_is_stratified():
  """Two strata of 2: the pooled mean's smallest resample has mass 1/16.

  Resampling within strata, the mean is (m1 + m2) / 2 with m_k in
  {a_k, mid_k, b_k}, so the 2.5% and 97.5% percentiles are (a1 + a2) / 2
  and (b1 + b2) / 2 exactly. Resampling the 4 pooled values instead would put
  the lower percentile below (a1 + a2) / 2 (the mean of 4 draws can be 0).
  """
  strata = [[0.0, 2.0], [10.0, 14.0]]
  low, high = S.stratified_bootstrap_ci(strata, statistic=np.mean, seed=0)
  assert (float(low), float(high)) == (5.0, 8.0)
  pooled = stats.bootstrap((np.array([0.0, 2.0, 10.0, 14.0]),), np.mean,
                           method="percentile", rng=np.random.default_rng(0))
  assert pooled.confidence_interval.low < 5.0


def test_single_stratum_equals_scipy_bootstrap():
  x = np.random.default_rng(1).normal(size=12)
  low, high = S.stratified_bootstrap_ci([x], seed=5)
  ref = stats.bootstrap((x,), lambda s, axis: stats.trim_mean(s, 0.25, axis),
                        n_resamples=S.NUM_RESAMPLES, method="percentile",
                        rng=np.random.default_rng(5))
  assert float(low) == ref.confidence_interval.low
  assert float(high) == ref.confidence_interval.high


def test_matches_an_explicit_stratified_resampler():
  """Endpoints agree with a loop resampler within 5 Monte-Carlo SEs."""
  rng = np.random.default_rng(2)
  strata = [rng.normal(0.0, 1.0, size=5), rng.normal(3.0, 2.0, size=8)]
  num = 20_000
  low, high = S.stratified_bootstrap_ci(strata, seed=7, num_resamples=num)
  ref_rng = np.random.default_rng(123)
  boot = S.iqm(np.concatenate([s[ref_rng.integers(0, len(s), (num, len(s)))]
                               for s in strata], axis=1))
  # SE of a p-quantile of B draws: sqrt(p (1 - p) / B) / density at it,
  # with the density of a normal of the bootstrap sd.
  p, sd = 0.025, boot.std()
  se = math.sqrt(p * (1 - p) / num) / (stats.norm.pdf(stats.norm.ppf(p)) / sd)
  assert abs(float(low) - np.percentile(boot, 2.5)) < 5 * se
  assert abs(float(high) - np.percentile(boot, 97.5)) < 5 * se


def test_batched_trailing_axis_equals_columns():
  x = np.random.default_rng(4).normal(size=(6, 3))
  low, high = S.stratified_bootstrap_ci([x], seed=1)
  assert low.shape == high.shape == (3,)
  for j in range(3):
    lj, hj = S.stratified_bootstrap_ci([x[:, j]], seed=1)
    assert float(lj) == pytest.approx(low[j], abs=1e-12)
    assert float(hj) == pytest.approx(high[j], abs=1e-12)


def test_deterministic_given_seed():
  x = np.random.default_rng(6).normal(size=9)
  a = S.stratified_bootstrap_ci([x], seed=11)
  b = S.stratified_bootstrap_ci([x], seed=11)
  c = S.stratified_bootstrap_ci([x], seed=12)
  assert a == b
  assert a != c


def _coverage(n, statistic, reps=200, mu=1.5):
  rng = np.random.default_rng(2026)
  hits = 0
  for r in range(reps):
    x = rng.normal(mu, 2.0, size=n)
    low, high = S.stratified_bootstrap_ci([x], statistic=statistic, seed=r)
    hits += bool(low <= mu <= high)
  return hits / reps


@pytest.mark.parametrize("n,statistic", [(10, np.mean), (100, np.mean),
                                         (100, S.iqm)])
def test_coverage_on_normal_samples(n, statistic):
  """200 replications; the true mean (= the population IQM) is covered at
  the percentile interval's large-sample rate within 4 binomial SEs."""
  expected = S.normal_coverage(n)
  assert expected == pytest.approx({10: 0.904, 100: 0.946}[n], abs=1e-3)
  tolerance = 4 * math.sqrt(expected * (1 - expected) / 200)
  assert abs(_coverage(n, statistic) - expected) < tolerance


def test_paired_difference():
  a = {0: 10.0, 1: 12.0, 2: 11.0, 5: 100.0}
  b = {0: 9.0, 1: 9.0, 2: 10.0, 3: 0.0}
  d = S.paired_difference(a, b, seed=0)
  assert d.seeds == (0, 1, 2)
  np.testing.assert_array_equal(d.differences, [1.0, 3.0, 1.0])
  assert d.mean == pytest.approx(5.0 / 3.0)
  assert d.std == pytest.approx(np.std([1.0, 3.0, 1.0], ddof=1))
  assert d.ci[0] >= 1.0 and d.ci[1] <= 3.0 and d.excludes_zero
  one = S.paired_difference({0: 1.0}, {0: 3.0}, seed=0)
  assert one.ci is None and one.std is None and not one.excludes_zero
  with pytest.raises(ValueError,
                     match=r"no shared seeds: A has \[0\], B has \[1\]"):
    S.paired_difference({0: 1.0}, {1: 1.0}, seed=0)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="confidence_level.*1.5"):
    S.stratified_bootstrap_ci([[1.0, 2.0]], confidence_level=1.5, seed=0)
  with pytest.raises(ValueError, match=r"stratum 1 needs >= 2 units.*\(1,\)"):
    S.stratified_bootstrap_ci([[1.0, 2.0], [3.0]], seed=0)
  with pytest.raises(ValueError, match="num_resamples.*10"):
    S.stratified_bootstrap_ci([[1.0, 2.0]], num_resamples=10, seed=0)
  with pytest.raises(ValueError, match="non-finite"):
    S.stratified_bootstrap_ci([[1.0, np.nan]], seed=0)
  with pytest.raises(ValueError, match="n must be an int >= 2; got 1"):
    S.normal_coverage(1)

"""Statistical assertions shared by the estimator tests.

A Monte-Carlo mean must be within NUM_SE standard errors of its exact value
(the SE from the draws themselves, ddof = 1); a sample variance within
NUM_SE standard errors of a sample variance, Var(s^2) ~= (m4 - s^4) / n
with m4 the fourth central moment. Fixed seeds make each check
deterministic.
"""

import numpy as np

NUM_SE = 5.0  # Tolerance in standard errors.


def assert_mean_close(draws, exact, num_se=NUM_SE):
  """Draws [N, ...] (or [N] for a scalar): every coordinate's mean over the
  leading axis is within num_se SEs of `exact` (broadcast to [...])."""
  draws = np.asarray(draws, np.float64)
  exact = np.broadcast_to(np.asarray(exact, np.float64),
                          draws.shape[1:]).reshape(-1)
  draws = draws.reshape(draws.shape[0], -1)
  mean = draws.mean(axis=0)
  se = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
  err = np.abs(mean - exact)
  assert np.all(err <= num_se * se), (
      f"MC means {mean} vs exact {exact}: off by up to "
      f"{np.max(err / se):.1f} standard errors (SE {se})")


def assert_variance_close(draws, exact, num_se=NUM_SE):
  """The sample variance of scalar draws [N] is within num_se SEs of
  `exact`."""
  draws = np.asarray(draws, np.float64).reshape(-1)
  centered = draws - draws.mean()
  var = centered.var(ddof=1)
  se = np.sqrt((np.mean(centered**4) - var**2) / draws.size)
  assert abs(var - exact) <= num_se * se, (
      f"sample variance {var:.4f} vs exact {exact:.4f}: off by "
      f"{abs(var - exact) / se:.1f} standard errors (SE {se:.3f})")

"""Tests of common/_estimators/baselines.py.

Oracles by hand: the leave-one-out baseline of (1, 2, 6) is (4, 3.5, 1.5)
(Kool et al. 2019, Eq. 8); the moving-average baseline returns 0 before any
update, then the debiased EMA ema_t / (1 - decay^t) of the previous batches
(Kingma & Ba 2015, Alg. 1), never the current batch. The leave-one-out
baseline inside `score_function_grad` is tested statistically in
tests/test_estimators_pathwise_score.py.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import estimators as E


def test_leave_one_out_baseline_by_hand():
  f = jnp.array([1.0, 2.0, 6.0])
  np.testing.assert_allclose(E.leave_one_out_baseline(f), [4.0, 3.5, 1.5])
  with pytest.raises(ValueError, match="at least 2 samples"):
    E.leave_one_out_baseline(jnp.array([1.0]))


def test_moving_average_baseline_is_debiased_and_lags_one_step():
  state = E.init_moving_average_baseline()
  b0, state = E.moving_average_baseline(state, jnp.array([3.0, 5.0]), decay=0.9)
  assert float(b0) == 0.0  # No information before the first update.
  b1, state = E.moving_average_baseline(state, jnp.array([10.0]), decay=0.9)
  assert float(b1) == pytest.approx(4.0)  # Debiased: exactly the first mean.
  b2, _ = E.moving_average_baseline(state, jnp.array([0.0]), decay=0.9)
  # ema = 0.9 * 0.4 + 0.1 * 10 = 1.36; debias by 1 - 0.81 = 0.19.
  assert float(b2) == pytest.approx(1.36 / 0.19, rel=1e-6)
  step = jax.jit(functools.partial(E.moving_average_baseline, decay=0.5))
  b, _ = step(E.init_moving_average_baseline((2,)), jnp.ones((4, 2)))
  chex.assert_shape(b, (2,))
  with pytest.raises(ValueError, match="decay=1.5"):
    E.moving_average_baseline(state, jnp.ones(2), decay=1.5)


def test_moving_average_baseline_with_traced_decay():
  """decay may be traced under jit (its range is then not checked)."""
  state = E.init_moving_average_baseline()
  step = jax.jit(E.moving_average_baseline)
  _, state = step(state, jnp.array([3.0, 5.0]), decay=jnp.float32(0.9))
  b, _ = step(state, jnp.array([0.0]), decay=jnp.float32(0.9))
  assert float(b) == pytest.approx(4.0)


def test_bad_inputs_raise_clear_errors():
  state = E.init_moving_average_baseline()
  with pytest.raises(ValueError, match="decay=-0.1"):
    E.moving_average_baseline(state, jnp.ones(2), decay=-0.1)
  with pytest.raises(TypeError, match="decay must be a real number; got "
                     "decay='0.9'"):
    E.moving_average_baseline(state, jnp.ones(2), decay="0.9")
  with pytest.raises(TypeError, match="values must have a floating dtype"):
    E.moving_average_baseline(state, jnp.ones(2, jnp.int32), decay=0.9)
  with pytest.raises(ValueError, match=r"state.ema must have the same shape.*"
                     r"\(3,\).*state.ema of shape \(\)"):
    E.moving_average_baseline(state, jnp.ones((4, 3)), decay=0.9)
  with pytest.raises(TypeError, match="dtype must be a floating dtype"):
    E.init_moving_average_baseline(dtype=jnp.int32)
  with pytest.raises(ValueError, match=r"axis must be in \[-1, 1\).*axis=1"):
    E.leave_one_out_baseline(jnp.ones(3), axis=1)
  with pytest.raises(TypeError, match="axis must be an int; got 0.0"):
    E.leave_one_out_baseline(jnp.ones(3), axis=0.0)

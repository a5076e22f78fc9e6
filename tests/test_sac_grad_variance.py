"""Kept checkpoints, M = 1 score function, benchmarks/sac_grad_variance.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import sac_grad_variance as gv
from common import checkpointing
from common import estimators
from launch.configs import sac as sac_config
from sac import learner
from sac import losses
from sac import train as sac_train
from sac import validation


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
  """Test preset (checkpoints every 200 steps to 600) keeping 200 and 300."""
  workdir = str(tmp_path_factory.mktemp("kept"))
  config = sac_config.get_config("test")
  config.keep_checkpoint_steps = (200, 300)
  sac_train.train(config, workdir)
  return workdir


def _steps(workdir):
  ckpt = checkpointing.Checkpointer(workdir)
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def test_run_keeps_requested_steps_plus_last_two(kept_run):
  # 300 is not a multiple of checkpoint_every: it is saved because it is kept.
  assert _steps(kept_run) == [200, 300, 400, 600]


@pytest.mark.parametrize("bad,error", [
    ((0,), ValueError), ((100, -200), ValueError), ((150.0,), TypeError),
    ((True,), TypeError), ((301,), ValueError)])
def test_bad_keep_checkpoint_steps_are_refused(bad, error):
  config = sac_config.get_config("test")
  config.num_envs = 2                 # (301,): not a multiple of num_envs.
  config.keep_checkpoint_steps = bad
  with pytest.raises(error, match="keep_checkpoint_steps"):
    validation.check_config(config)


def test_score_function_with_one_sample_has_no_baseline():
  # log p_b = theta * c_b: the gradient is mean_b c_b f_b (Williams 1992).
  c = jnp.array([[1.0, -2.0, 0.5]])                           # [M=1, B=3]
  q = jnp.array([[[1.0, 2.0, -1.0]], [[0.0, 3.0, 1.0]]])      # [N=2, M, B]
  alpha, theta = 0.3, 0.7
  grad = jax.grad(lambda t: losses.actor_loss_score_function(t * c, q, alpha))(
      theta)
  f = alpha * theta * np.asarray(c) - np.min(np.asarray(q), axis=0)
  np.testing.assert_allclose(grad, np.mean(np.asarray(c) * f), rtol=1e-5)


def _tiny():
  config = sac_config.get_config("test")
  config.hidden_sizes = (8,)
  agents = gv.arm_agents(config, obs_dim=3, action_dim=2)
  state = learner.init_state(agents[gv.PATHWISE], seed=0, buffer_size=8)
  obs = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
  return agents, state, obs


def test_every_arm_estimates_the_pathwise_mean_within_5_se():
  """Paired differences to pathwise have mean zero (tiny random state)."""
  agents, state, obs = _tiny()
  repeats = 1000
  moment_fns = gv.make_moment_fns(agents, num_repeats=repeats)
  moments = gv.gradient_moments(moment_fns, state, obs, jax.random.PRNGKey(2))
  for arm in ("pathwise_8", "score_function_1", "score_function_2",
              "score_function_8"):
    se = np.sqrt(moments["diff_variance"][arm] / repeats)
    assert np.all(se > 0), arm
    np.testing.assert_array_less(np.abs(moments["diff_mean"][arm]), 5 * se,
                                 err_msg=arm)
  # More actions per state, with a baseline: less variance, in this order.
  total = {arm: moments["variance"][arm].sum() for arm in gv.ARMS}
  assert (total["score_function_1"] > total["score_function_2"]
          > total["score_function_8"]), total
  # pathwise_8 averages 8 independent pathwise estimates per state: exactly
  # 1/8 of the variance in expectation. Each per-coordinate sample variance
  # over R repeats has relative SE ~ sqrt(2 / R); the ratio of the totals
  # is allowed 5 such SEs.
  ratio = total["pathwise_8"] / total[gv.PATHWISE]
  assert abs(ratio - 1 / 8) < 5 * np.sqrt(2 / repeats) / 8, ratio


def test_the_5_se_check_detects_a_different_objective():
  """Score function at alpha = 2 against pathwise at alpha = 0.2 (another
  entropy weight, so another gradient): the same check must reject it."""
  agents, state, obs = _tiny()
  repeats = 1000

  def difference(key):
    grad = lambda arm, alpha: gv._flat(learner.actor_gradient(
        agents[arm], state.actor_params, state.critic_params,
        jnp.log(alpha), obs, key))
    return grad("score_function_8", 2.0) - grad(gv.PATHWISE, 0.2)

  m = jax.jit(lambda key: estimators.grad_moments(
      difference, key, num_repeats=repeats))(jax.random.PRNGKey(2))
  z = np.asarray(m.mean) / np.sqrt(np.asarray(m.variance) / repeats)
  assert np.max(np.abs(z)) > 5


def test_tool_reports_every_arm_and_keeps_the_checkpoints(kept_run, tmp_path):
  arms = (gv.PATHWISE, "score_function_2")   # Two arms: half the compiles.
  options = gv.Options(num_repeats=50, num_batches=2, batch_size=16,
                       timing_rounds=2, timing_calls=1, arms=arms)
  out = str(tmp_path / "report")
  results = gv.run(kept_run, [300, 600], out, options)
  for name in ("grad_variance.md", "grad_variance.json", "grad_variance.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert [(e["step"], e["seed"]) for e in results["variance"]] == [
      (300, 0), (600, 0)]
  for entry in results["variance"]:
    assert tuple(entry["arms"]) == arms
    path, score = entry["arms"][gv.PATHWISE], entry["arms"]["score_function_2"]
    assert path["ratio"] == 1.0 and path["cosine"] == pytest.approx(1.0)
    assert score["total_variance"] > 0 and score["z_coords"] > 0
    assert 0.5 < score["z_mean_square"] < 2.0   # Means agree: z ~ t(49).
  assert results["cost"][gv.PATHWISE]["gradient_step_ratio_median"] == 1.0
  with open(os.path.join(out, "grad_variance.md")) as f:
    table = f.read()
  assert table.count("| 300 | 0 |") == len(arms)
  assert _steps(kept_run) == [200, 300, 400, 600]
  with pytest.raises(ValueError, match="no checkpoint at step 500"):
    gv.run(kept_run, [500], out, options)
  with pytest.raises(ValueError, match="score_function_3"):
    gv.arm_agents(sac_config.get_config("test"), 3, 1, ("pathwise",
                                                       "score_function_3"))


def _fake_results(ratios_by_step):
  """A grad_variance.json-shaped dict: one score-function arm, given ratios."""
  entry = lambda step, seed, ratio: {"step": step, "seed": seed, "arms": {
      gv.PATHWISE: {"ratio": 1.0, "cosine": 1.0},
      "score_function_8": {"ratio": ratio, "cosine": 0.99 - 0.01 * seed,
                           "z_frac_1_96": 0.05, "z_frac_3_29": 0.001,
                           "z_mean_square": 1.0 + 0.1 * seed}}}
  return {"variance": [entry(step, seed, r)
                       for step, ratios in ratios_by_step.items()
                       for seed, r in enumerate(ratios)]}


def test_across_seeds_summary_is_the_iqm_with_a_bootstrap_ci():
  from common import seed_statistics
  ratios = [0.8, 0.9, 1.3, 0.85, 5.0]
  rows = gv.across_seeds(_fake_results({20000: ratios, 50000: [2.0]}))
  first, single = rows
  # IQM of 5 values drops the lowest and the highest: mean(0.85, 0.9, 1.3).
  assert first["iqm"] == pytest.approx((0.85 + 0.9 + 1.3) / 3)
  assert first["iqm"] == pytest.approx(float(seed_statistics.iqm(ratios)))
  assert first["ci"][0] <= first["iqm"] <= first["ci"][1]
  assert (first["min"], first["max"]) == (0.8, 5.0)
  assert first["cosine_min"] == pytest.approx(0.95)
  assert first["z_mean_square"] == pytest.approx(1.2)
  assert first["seeds"] == [0, 1, 2, 3, 4]
  assert single["ci"] is None and single["iqm"] == 2.0
  assert gv.across_seeds(_fake_results({20000: ratios, 50000: [2.0]})) == rows


def test_report_only_rewrites_the_report_from_the_json(kept_run, tmp_path):
  out = str(tmp_path / "report")
  options = gv.Options(num_repeats=20, num_batches=1, batch_size=8,
                       timing_rounds=1, timing_calls=1,
                       arms=(gv.PATHWISE, "score_function_1"))
  gv.run(kept_run, [300], out, options)
  md = os.path.join(out, "grad_variance.md")
  json_path = os.path.join(out, "grad_variance.json")
  before = open(md).read()
  os.remove(md)
  json_mtime = os.stat(json_path).st_mtime_ns
  gv.main([f"--out={out}", "--report_only"])
  assert open(md).read() == before
  assert os.stat(json_path).st_mtime_ns == json_mtime  # Measurements kept.
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  assert "| 300 | score_function_1 | 1 |" in before  # The across-seeds row.
  assert f"numpy {np.__version__}" in before  # The provenance line.
  with pytest.raises(SystemExit, match="does not exist"):
    gv.main([f"--out={tmp_path / 'none'}", "--report_only"])
  with pytest.raises(SystemExit):   # Neither --report_only nor --workdir.
    gv.main([f"--out={out}"])

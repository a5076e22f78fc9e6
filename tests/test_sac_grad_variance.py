"""Kept checkpoints, the M = 1 score function, benchmarks/sac_grad_variance.py
and benchmarks/sac_grad_variance_dims.py."""

import json
import os
import re
import shutil

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
  # The measured JSON is an input of sac_grad_variance_dims (1 seed: no CI).
  from benchmarks import sac_grad_variance_dims as dims
  with open(json_path) as f:
    ratio = json.load(f)["variance"][0]["arms"]["score_function_1"]["ratio"]
  dims.main([f"--inputs={out}", f"--out={tmp_path / 'dims'}"])
  table = (tmp_path / "dims" / "variance_dims.md").read_text()
  assert f"| Pendulum-v1 | 1 | 1 | {ratio:.3g} |" in table
  with pytest.raises(SystemExit, match="does not exist"):
    gv.main([f"--out={tmp_path / 'none'}", "--report_only"])
  with pytest.raises(SystemExit):   # Neither --report_only nor --workdir.
    gv.main([f"--out={out}"])


# --- benchmarks/sac_grad_variance_dims.py -----------------------------------


def _moments(ratios, rng, num_params=4):
  """One batch's moments in `gv.gradient_moments`' layout: every arm's
  per-coordinate variance is `ratio` times pathwise's (0.5)."""
  out = {"mean": {}, "variance": {}, "diff_mean": {}, "diff_variance": {}}
  for arm, ratio in {gv.PATHWISE: 1.0, **ratios}.items():
    path = arm == gv.PATHWISE
    out["mean"][arm] = 1.0 + rng.normal(size=num_params)
    out["variance"][arm] = np.full(num_params, 0.5 * ratio)
    out["diff_mean"][arm] = (np.zeros(num_params) if path
                             else 0.01 * rng.normal(size=num_params))
    out["diff_variance"][arm] = np.full(num_params, 0.0 if path else 1.0)
  return out


def _write_input(out, env_id, steps, ratio_fns):
  """A grad_variance output directory written by the tool's own code
  (`new_results`, `record_variance`, `write_report`): seeds 0-4, two
  batches per seed, ratio_fns[arm](seed) the variance ratio to pathwise."""
  rng = np.random.default_rng(0)
  results = gv.new_results(env_id=env_id, actor_grad="pathwise",
                           workdir=out, options={
                               "num_batches": 2, "batch_size": 8,
                               "num_repeats": 10, "timing_rounds": 1})
  for step in steps:
    for seed in range(5):
      ratios = {arm: f(seed) for arm, f in ratio_fns.items()}
      gv.record_variance(results, step, seed,
                         [_moments(ratios, rng) for _ in range(2)], 10)
  gv.write_report(results, out)


def test_variance_dims_tables_and_figure_from_the_tools_outputs(tmp_path,
                                                                capsys):
  """Three tasks; ratios by hand: score_function_8 0.2 |A| (1 + 0.1 s),
  score_function_1 |A| (2 + s) and pathwise_8 1/8 for seed s = 0..4. The
  IQM of 5 values drops the lowest and highest: 0.2 |A| (1.1 + 1.2 +
  1.3) / 3 = 0.24 |A| and |A| (3 + 4 + 5) / 3 = 4 |A|. Only Pendulum-v1
  measured score_function_2 (ratio 0.5); HalfCheetah-v5 has no 50000
  checkpoint. |A| = 1, 3, 6 is read from the environments."""
  from benchmarks import sac_grad_variance_dims as dims
  from common import seed_statistics
  import zlib
  inputs = []
  for env_id, dim, steps in (("Hopper-v5", 3, (20000, 50000)),
                             ("Pendulum-v1", 1, (20000, 50000)),
                             ("HalfCheetah-v5", 6, (20000,))):
    fns = {"score_function_1": lambda s, d=dim: d * (2.0 + s),
           "score_function_8": lambda s, d=dim: 0.2 * d * (1 + 0.1 * s),
           "pathwise_8": lambda s: 0.125}
    if env_id == "Pendulum-v1":
      fns["score_function_2"] = lambda s: 0.5
    inputs.append(str(tmp_path / env_id))
    _write_input(inputs[-1], env_id, steps, fns)
  out = tmp_path / "dims"
  dims.main([f"--inputs={','.join(inputs)}", f"--out={out}"])
  table = (out / "variance_dims.md").read_text()
  assert capsys.readouterr().out.strip() == table.strip()
  assert (out / "variance_dims.png").stat().st_size > 0
  combined = json.loads((out / "variance_dims.json").read_text())
  assert [(d["env_id"], d["action_dim"]) for d in combined["inputs"]] == [
      ("Pendulum-v1", 1), ("Hopper-v5", 3), ("HalfCheetah-v5", 6)]
  assert combined["steps"] == [20000, 50000]

  def cell(step, arm, ratios):
    low, high = seed_statistics.stratified_bootstrap_ci(
        [ratios], seed=zlib.crc32(f"{step}/{arm}".encode()))
    return f"{seed_statistics.iqm(ratios):.3g} [{low:.3g}, {high:.3g}]"

  seeds = np.arange(5)
  for step in (20000, 50000):
    section = table.split(f"## Checkpoint {step}\n")[1].split("\n## ")[0]
    for env_id, dim in (("Pendulum-v1", 1), ("Hopper-v5", 3),
                        ("HalfCheetah-v5", 6)):
      if env_id == "HalfCheetah-v5" and step == 50000:
        assert env_id not in section
        continue
      sf1, sf8 = dim * (2.0 + seeds), 0.2 * dim * (1 + 0.1 * seeds)
      assert f"{seed_statistics.iqm(sf8):.3g}" == f"{0.24 * dim:.3g}"
      assert f"{seed_statistics.iqm(sf1):.3g}" == f"{4 * dim:.3g}"
      sf2 = (cell(step, "score_function_2", np.full(5, 0.5))
             if env_id == "Pendulum-v1" else "not measured")
      row = (f"| {env_id} | {dim} | 5 | {cell(step, 'score_function_1', sf1)}"
             f" | {sf2} | {cell(step, 'score_function_8', sf8)} | "
             f"{cell(step, 'pathwise_8', np.full(5, 0.125))} |")
      assert row in section, (row, section)
  # --steps and --arms select; bad input names the value.
  dims.main([f"--inputs={','.join(inputs)}", f"--out={out}",
             "--steps=50000", "--arms=score_function_8"])
  combined = json.loads((out / "variance_dims.json").read_text())
  assert {(r["step"], r["arm"]) for r in combined["rows"]} == {
      (50000, "score_function_8")}
  copy = str(tmp_path / "copy")
  shutil.copytree(inputs[0], copy)
  for argv, message in (
      ([f"--inputs={inputs[0]},{copy}"], "two inputs measure Hopper-v5"),
      ([f"--inputs={tmp_path}"], "holds no grad_variance.json"),
      ([f"--inputs={inputs[0]}", "--steps=30000"], r"--steps \[30000\]"),
      ([f"--inputs={inputs[0]}", "--arms=score_function_3"],
       r"--arms \['score_function_3'\]")):
    with pytest.raises(SystemExit):
      dims.main(argv + [f"--out={out}"])
    assert re.search(message, capsys.readouterr().err), message
  assert not [n for n in os.listdir(out) if ".tmp" in n]

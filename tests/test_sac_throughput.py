"""`benchmarks.sac_throughput --from_json`: the per-round table of a saved
run, with the ratios taken within each round, and the step's FLOP count.
Oracle of the first test: a hand-made JSON of
two rounds (ratios by hand: ours/ceiling 0.5 and 0.75, calls/ceiling 0.75
and 1, ours/calls 2/3 and 0.75)."""

import json

import jax
import numpy as np

from benchmarks import sac_throughput
import command_line_checks
from sac import learner


def _table(tmp_path, capsys, results: dict) -> tuple[list[str], dict]:
  """The `--from_json` table of `results`: its lines, and its cells by
  row label."""
  path = tmp_path / "throughput.json"
  path.write_text(json.dumps(results))
  sac_throughput.main(["--from_json", str(path)])
  lines = capsys.readouterr().out.splitlines()
  return lines, {line.split(" | ")[0][2:]: line.split(" | ")[1:]
                 for line in lines[2:]}


def test_table_from_json_has_per_round_ratios_median_and_minimum(
    tmp_path, capsys):
  lines, rows = _table(tmp_path, capsys, {
      "ceiling_rounds": [4.0, 4.0], "calls_rounds": [3.0, 4.0],
      "ours_rounds": [2.0, 3.0], "sbx_rounds": []})
  assert lines[0] == "| measure | round 1 | round 2 | median | minimum |"
  assert rows["ours / ceiling (ratio)"] == ["0.5", "0.75", "0.625", "0.5 |"]
  assert rows["calls / ceiling (ratio)"] == ["0.75", "1", "0.875", "0.75 |"]
  assert rows["ours / calls (ratio)"] == ["0.6667", "0.75", "0.7083",
                                          "0.6667 |"]
  assert not any("sbx" in label for label in rows)  # Not measured.


def test_missing_or_malformed_json_is_a_usage_error(tmp_path, capsys):
  command_line_checks.assert_usage_error(
      sac_throughput.main, ["--from_json", str(tmp_path / "none.json")],
      "is not a file; expected the JSON written by --out", capsys)
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  command_line_checks.assert_usage_error(
      sac_throughput.main, ["--from_json", str(bad)], "is not JSON", capsys)
  bad.write_text(json.dumps({"ceiling_rounds": [4.0]}))
  command_line_checks.assert_usage_error(
      sac_throughput.main, ["--from_json", str(bad)],
      'has no "ours_rounds" list', capsys)


def test_an_env_without_a_preset_is_a_usage_error(capsys):
  command_line_checks.assert_usage_error(
      sac_throughput.main, ["--env_id", "CartPole-v1"],
      "value should be one of <Pendulum-v1|HalfCheetah-v5", capsys)


def test_calls_over_sbx_is_reported_with_sbx(tmp_path, capsys):
  """Oracle: calls 3 and 4 against sbx 1 and 2 give 3 and 2 (median 2.5)."""
  _, rows = _table(tmp_path, capsys, {
      "ceiling_rounds": [4.0, 4.0], "calls_rounds": [3.0, 4.0],
      "ours_rounds": [2.0, 3.0], "sbx_rounds": [1.0, 2.0]})
  assert rows["calls / sbx (ratio)"] == ["3", "2", "2.5", "2 |"]
  assert rows["ours / sbx (ratio)"] == ["2", "1.5", "1.75", "1.5 |"]


def test_fastest_ceiling_call_gets_its_own_row_and_ratios(tmp_path, capsys):
  """Oracle: ours 2 and 3 against the fastest ceiling calls 5 and 4 give
  0.4 and 0.75 (median 0.575); calls 3 and 4 give 0.6 and 1."""
  _, rows = _table(tmp_path, capsys, {
      "ceiling_rounds": [4.0, 4.0], "ceiling_best_rounds": [5.0, 4.0],
      "calls_rounds": [3.0, 4.0], "ours_rounds": [2.0, 3.0]})
  assert rows["update-only ceiling, fastest of its 5 calls (updates/s)"] == [
      "5", "4", "4.5", "|"]
  assert rows["ours / ceiling_best (ratio)"] == ["0.4", "0.75", "0.575",
                                                 "0.4 |"]
  assert rows["calls / ceiling_best (ratio)"] == ["0.6", "1", "0.8", "0.6 |"]
  assert rows["ours / ceiling (ratio)"] == ["0.5", "0.75", "0.625", "0.5 |"]


def test_update_call_alone_gets_its_row_and_bounds_the_loop(tmp_path, capsys):
  """Oracle: ours 2 and 3 against the update call alone 4 and 5 give 0.5 and
  0.6; calls 3 and 4 give 0.75 and 0.8; the update call against the
  ceiling 4 and 4 gives 1 and 1.25, against sbx 1 and 2 gives 4 and 2.5."""
  _, rows = _table(tmp_path, capsys, {
      "ceiling_rounds": [4.0, 4.0], "updates_rounds": [4.0, 5.0],
      "calls_rounds": [3.0, 4.0], "ours_rounds": [2.0, 3.0],
      "sbx_rounds": [1.0, 2.0]})
  assert rows["the loop's update call alone (updates/s)"] == [
      "4", "5", "4.5", "|"]
  assert rows["ours / updates (ratio)"] == ["0.5", "0.6", "0.55", "0.5 |"]
  assert rows["calls / updates (ratio)"] == ["0.75", "0.8", "0.775", "0.75 |"]
  assert rows["updates / ceiling (ratio)"] == ["1", "1.25", "1.125", "1 |"]
  assert rows["updates / sbx (ratio)"] == ["4", "2.5", "3.25", "2.5 |"]


def test_floor_ratios_are_reported(tmp_path, capsys):
  """Oracle: ceiling 4 and 4 against floor 5 and 8 give 0.8 and 0.5; floor
  5 and 8 against sbx 1 and 2 give 5 and 4."""
  _, rows = _table(tmp_path, capsys, {
      "ceiling_rounds": [4.0, 4.0], "floor_rounds": [5.0, 8.0],
      "ours_rounds": [2.0, 3.0], "sbx_rounds": [1.0, 2.0]})
  assert rows["matrix-product floor (updates/s)"] == ["5", "8", "6.5", "|"]
  assert rows["ceiling / floor (ratio)"] == ["0.8", "0.5", "0.65", "0.5 |"]
  assert rows["floor / sbx (ratio)"] == ["5", "4", "4.5", "4 |"]


def test_step_flops_are_the_networks_products_and_little_else():
  """Oracle: the matrix products of one SAC gradient step counted by hand.

  Per batch row, with actor forward a = O H + H H + 2 A H and one critic's
  forward c = (O + A) H + H H + H: the actor on s' and on s (2a), the target
  critics and the critics on (s, a) (2 N c), the critics' weight gradients
  (N c) and input gradients through layers 3 and 2 (N (H H + H)), the
  critics on the new actions and their input gradients (2 N c), the actor's
  weight gradients (a) and input gradients through layers 3 and 2
  (H H + 2 A H). Multiply-adds times 2 B are FLOPs. The elementwise rest
  is a small share, measured at 15% for these sizes.
  """
  obs_dim, action_dim, hidden, batch, num_critics = 5, 2, 64, 32, 2
  agent = learner.make_agent(
      obs_dim=obs_dim, action_dim=action_dim, hidden_sizes=(hidden, hidden),
      num_critics=num_critics, actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4,
      gamma=0.99, tau=0.005, batch_size=batch, alpha=None,
      target_entropy=None, actor_grad="pathwise", score_function_samples=2)
  state = jax.tree.map(lambda x: x[None],
                       learner.init_state(agent, 0, buffer_size=64))
  o, a, h, n = obs_dim, action_dim, hidden, num_critics
  actor = o * h + h * h + 2 * a * h
  critic = (o + a) * h + h * h + h
  macs = (3 * actor + 5 * n * critic + n * (h * h + h) + h * h + 2 * a * h)
  dot_flops = 2 * batch * macs
  flops = sac_throughput.step_flops(agent, state)
  assert dot_flops <= flops <= 1.25 * dot_flops, (flops, dot_flops)


def test_time_matmul_returns_a_finite_rate():
  rate = sac_throughput.time_matmul(8, 16, count=3)
  assert np.isfinite(rate) and rate > 0

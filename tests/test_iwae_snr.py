"""benchmarks/iwae_snr.py: a tiny end-to-end run, tables from JSON, bad flags.

Oracles of the tiny run: at K = 1 the normalized weight is 1, so "stl"
(weights) and "dreg" (squared weights) give the same gradient on every
draw, hence the same SNR to the last digit; the decoder gradient does not
depend on the estimator, so neither does its SNR.
Weight diagnostics: for weights (1, 1, 1, 1) the ESS is S and log w has
std 0; for weights (1, 3) the ESS is (1 + 3)^2 / (1 + 9) = 1.6 of S = 2,
and log w = (0, log 3) has sample std log(3) / sqrt(2).
"""

import json
import math

import numpy as np
import pytest

from benchmarks import iwae_snr
import command_line_checks


def test_a_tiny_run_writes_consistent_outputs(tmp_path):
  out = tmp_path / "out"
  iwae_snr.main([
      "--tiny", "--num_steps=20", "--eval_every=10",
      "--checkpoint_steps=0,20", "--ks=1,2", "--estimators=stl,dreg",
      "--num_repeats=4", "--batch_size=2", "--weight_samples=8",
      f"--out_dir={out}"])
  results = iwae_snr.load_results(str(out / "iwae_snr.json"))
  assert results["checkpoint_steps"] == [0, 20]
  assert [r["step"] for r in results["curve"]] == [10, 20]
  snr = results["snr"]
  for step in (0, 20):
    assert snr[step]["stl"][1] == snr[step]["dreg"][1]
    for k in (1, 2):
      assert snr[step]["stl"][k]["decoder"] == snr[step]["dreg"][k]["decoder"]
      for network in iwae_snr.NETWORKS:
        assert snr[step]["stl"][k][network]["mean"] > 0
  # Training changed the parameters, so the SNR changed.
  assert snr[0]["stl"][1] != snr[20]["stl"][1]
  text = (out / "iwae_snr.md").read_text()
  assert "| 20 | dreg |" in text
  for step in (0, 20):
    assert results["weights"][step]["num_samples"] == 8
    assert 0 < results["weights"][step]["ess_fraction"] <= 1
  assert "| 20 | " in text.split("ESS / S")[1]
  assert (out / "iwae_snr.png").stat().st_size > 0

  # The tables and figure are rewritten from the JSON alone.
  again = tmp_path / "again"
  iwae_snr.main([f"--from_json={out / 'iwae_snr.json'}",
                 f"--out_dir={again}"])
  assert (again / "iwae_snr.md").read_text() == text


class _FixedWeights:
  """A stand-in model whose log weights are given."""

  def __init__(self, log_w):
    self.log_w = np.log(np.asarray(log_w, np.float64))

  def log_weights(self, params, x, key, *, num_samples):
    assert self.log_w.shape == (x.shape[0], num_samples)
    return self.log_w


@pytest.mark.parametrize("weights,ess,std", [
    ([[1.0, 1.0, 1.0, 1.0]], 1.0, 0.0),
    ([[1.0, 3.0]], 0.8, math.log(3) / math.sqrt(2)),
    ([[1.0, 1.0], [1.0, 3.0]], 0.9, math.log(3) / math.sqrt(2) / 2),
])
def test_weight_diagnostics_match_the_ess_formula(weights, ess, std):
  model = _FixedWeights(weights)
  x = np.zeros((len(weights), 784))
  d = iwae_snr.weight_diagnostics(model, None, x, None,
                                  num_samples=len(weights[0]))
  assert d["ess_fraction"] == pytest.approx(ess, rel=1e-12)
  assert d["log_weight_std"] == pytest.approx(std, rel=1e-12, abs=1e-15)


def _results():
  snr = {0: {"iwae": {}}}
  for k, encoder in ((1, 2.0), (4, 1.0), (16, 0.5)):  # 2 / sqrt(K).
    snr[0]["iwae"][k] = {
        n: {"mean": value, "median": value, "num_params": 3,
            "num_constant": 0}
        for n, value in (("encoder", encoder), ("decoder", 4.0 / encoder))}
  args = {"tiny": True, "seed": 0, "num_steps": 0, "num_repeats": 4,
          "batch_size": 2, "train_num_importance_samples": 1,
          "train_estimator": "iwae"}
  return {"args": args, "checkpoint_steps": [0], "ks": [1, 4, 16],
          "estimators": ["iwae"], "curve": [], "snr": snr}


def test_tables_give_the_log_log_slopes(tmp_path):
  path = tmp_path / "iwae_snr.json"
  path.write_text(json.dumps(_results()))
  loaded = iwae_snr.load_results(str(path))
  assert loaded["snr"][0]["iwae"][16]["encoder"]["mean"] == 0.5
  iwae_snr.write_outputs(loaded, str(tmp_path / "out"))
  text = (tmp_path / "out" / "iwae_snr.md").read_text()
  assert "| 0 | iwae | 2 (2) | 1 (1) | 0.5 (0.5) | -0.50 |" in text
  assert "| 0 | iwae | 2 (2) | 4 (4) | 8 (8) | +0.50 |" in text


@pytest.mark.parametrize("argv,message", [
    (["--num_steps=150", "--eval_every=100"], "multiple of --eval_every"),
    (["--checkpoint_steps=0,150"], "--checkpoint_steps [150]"),
    (["--estimators=iwae,vimco"], "unknown --estimators ['vimco']"),
    (["--ks=0,4"], "--ks must be integers >= 1"),
    (["--num_repeats=1"], "--num_repeats must be >= 2"),
    (["--train_estimator=vimco"], "train_estimator"),
])
def test_bad_flags_exit_with_status_2(tmp_path, capsys, argv, message):
  command_line_checks.assert_usage_error(
      iwae_snr.main, argv + [f"--out_dir={tmp_path}"], message, capsys)

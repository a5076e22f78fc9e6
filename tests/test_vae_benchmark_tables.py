"""The tables of `benchmarks/vae_estimators.py` rewritten from a saved JSON.

Oracle: a hand-made result with known numbers. JSON turns the integer seed
and step keys into strings; `load_results` must restore them, so that
`--from_json` writes the same tables as the training run that saved the
JSON. The comparison table's differences and ratios are checked against the
hand-made numbers.
"""

import json
import re
import sys

import pytest

from benchmarks import vae_estimators


def _results():
  finals = {"pathwise": {0: {"test_neg_elbo": 100.0,
                             "test_neg_log_px_iw": 95.0},
                         1: {"test_neg_elbo": 102.0,
                             "test_neg_log_px_iw": 97.0}},
            "score_function": {0: {"test_neg_elbo": 110.0,
                                   "test_neg_log_px_iw": 104.0},
                               1: {"test_neg_elbo": 107.5,
                                   "test_neg_log_px_iw": 103.0}}}
  variance = {"pathwise": {10: {"trace_variance": 3.0, "mean_sq_norm": 1.0},
                           20: {"trace_variance": 2.0, "mean_sq_norm": 1.0}},
              "score_function": {10: {"trace_variance": 300.0,
                                      "mean_sq_norm": 1.0},
                                 20: {"trace_variance": 50.0,
                                      "mean_sq_norm": 1.0}}}
  curves = {name: {seed: [{"step": 10, "test_neg_elbo": 150.0},
                          {"step": 20, "test_neg_elbo": f["test_neg_elbo"]}]
                   for seed, f in per_seed.items()}
            for name, per_seed in finals.items()}
  timing = {"pathwise": {"ms_per_step": 10.0, "ratio": 1.0},
            "score_function": {"ms_per_step": 11.0, "ratio": 1.1}}
  return {"args": {"preset": "gaussian", "iw_samples": 100, "num_steps": 20,
                   "num_repeats": 8},
          "field": "encoder_grad", "curves": curves, "finals": finals,
          "variance": variance, "timing": timing, "checkpoint_steps": [10, 20]}


def test_from_json_restores_keys_and_writes_both_tables(tmp_path):
  path = tmp_path / "vae_estimators_gaussian.json"
  path.write_text(json.dumps(_results()))
  loaded = vae_estimators.load_results(str(path))
  assert loaded == _results()  # Integer keys back, values unchanged.

  out = tmp_path / "out"
  vae_estimators.write_outputs(loaded, str(out), compare_to="score_function")
  text = (out / "vae_estimators_gaussian.md").read_text()
  assert "| pathwise | 101.0 ± 1.4 | 96.0 ± 1.4 | 3 | 2 | 10.0 | 1.00 |" in text
  assert ("| estimator | test -ELBO − score_function (nats), seeds 0, 1 | "
          "variance / score_function's @ 10 | "
          "variance / score_function's @ 20 |") in text
  assert "| pathwise | -10.0, -5.5 | 0.0100 | 0.0400 |" in text
  assert "| score_function | 0.0, 0.0 | 1.00 | 1.00 |" in text
  assert (out / "vae_estimators_gaussian.png").stat().st_size > 0


@pytest.mark.parametrize("argv,match", [
    (["--compare_to=rebar"], "--compare_to='rebar' is not among"),
    (["--preset=gaussian"], "drop \\['--preset'\\]"),
])
def test_from_json_rejects_bad_options(tmp_path, monkeypatch, capsys, argv,
                                       match):
  path = tmp_path / "r.json"
  path.write_text(json.dumps(_results()))
  monkeypatch.setattr(sys, "argv", ["vae_estimators", f"--from_json={path}",
                                    f"--out_dir={tmp_path}"] + argv)
  with pytest.raises(SystemExit):
    vae_estimators.main()
  assert re.search(match, capsys.readouterr().err)

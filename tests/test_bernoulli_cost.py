"""`benchmarks/bernoulli_cost.py`: its summary, table and bad input.

The timing itself is a measurement (not tested); tested here without
compiling anything: the summary's median time and median per-round ratio
(oracle: hand-computed medians of made-up per-round seconds), the markdown
table built from it, and the usage errors of the command line.
"""

import pytest

from benchmarks import bernoulli_cost
import command_line_checks


def test_summary_takes_medians_of_times_and_of_per_round_ratios():
  seconds = {"score_function": [1.0, 2.0, 4.0], "disarm": [3.0, 2.0, 2.0]}
  flops = {"score_function": 2e9, "disarm": 3e9}
  table = bernoulli_cost.summarise(seconds, flops, "score_function")
  assert table["disarm"]["ms_per_step"] == 2000.0  # median(3, 2, 2) s.
  assert table["disarm"]["ratio"] == 1.0  # median(3/1, 2/2, 2/4).
  assert table["score_function"]["ratio"] == 1.0
  assert table["disarm"]["gflop_per_step"] == 3.0
  results = {"settings": {"timing_rounds": 3, "timing_steps": 50, "seed": 0,
                          "tiny": False},
             "architectures": {"linear": table}}
  text = bernoulli_cost.markdown(results, "score_function")
  assert "### linear" in text
  assert "| disarm | 2e+03 | 1 | 3 | 2 forward (1 pair) | 1 forward and " \
         "backward |" in text
  assert "3 interleaved rounds of chunks of 50 steps, seed 0." in text


@pytest.mark.parametrize("argv,message", [
    (["--estimators=arm,reinforce"], "unknown estimators ['reinforce']"),
    (["--estimators=arm,disarm"], "--reference='score_function' is not "
     "among --estimators=arm,disarm"),
    (["--architectures=deep"], "unknown architectures ['deep']"),
    (["--timing_rounds=0"], "--timing_rounds must be >= 1; got 0"),
])
def test_bad_input_exits_with_status_2(argv, message, tmp_path, capsys):
  command_line_checks.assert_usage_error(
      bernoulli_cost.main, argv + [f"--out_dir={tmp_path}"], message, capsys)
  assert not list(tmp_path.iterdir())  # Nothing written.

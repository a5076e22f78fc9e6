"""`benchmarks.sac_throughput --from_json`: the per-round table of a saved
run, with the ratios taken within each round. Oracle: a hand-made JSON of
two rounds (ratios by hand: ours/ceiling 0.5 and 0.75, calls/ceiling 0.75
and 1, ours/calls 2/3 and 0.75)."""

import json

from benchmarks import sac_throughput
import command_line_checks


def test_table_from_json_has_per_round_ratios_median_and_minimum(
    tmp_path, capsys):
  path = tmp_path / "throughput.json"
  path.write_text(json.dumps({"ceiling_rounds": [4.0, 4.0],
                              "calls_rounds": [3.0, 4.0],
                              "ours_rounds": [2.0, 3.0], "sbx_rounds": []}))
  sac_throughput.main(["--from_json", str(path)])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "| measure | round 1 | round 2 | median | minimum |"
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
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


def test_calls_over_sbx_is_reported_with_sbx(tmp_path, capsys):
  """Oracle: calls 3 and 4 against sbx 1 and 2 give 3 and 2 (median 2.5)."""
  path = tmp_path / "throughput.json"
  path.write_text(json.dumps({"ceiling_rounds": [4.0, 4.0],
                              "calls_rounds": [3.0, 4.0],
                              "ours_rounds": [2.0, 3.0],
                              "sbx_rounds": [1.0, 2.0]}))
  sac_throughput.main(["--from_json", str(path)])
  lines = capsys.readouterr().out.splitlines()
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
  assert rows["calls / sbx (ratio)"] == ["3", "2", "2.5", "2 |"]
  assert rows["ours / sbx (ratio)"] == ["2", "1.5", "1.75", "1.5 |"]

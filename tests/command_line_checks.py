"""The check shared by the benchmarks' bad-flag tests: a usage error.

`benchmarks.command_line` reports bad input as `error: ...` on stderr with
exit status 2 (absl's convention for usage errors).
"""

import pytest


def assert_usage_error(main, argv, message, capsys):
  """`main(argv)` exits with status 2 and `message` in its stderr."""
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err

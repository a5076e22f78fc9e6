"""Measured performance scripts (not tests), each run as a module.

  python -m benchmarks.NAME --flag=value ...

from the repository root, where NAME is `estimators`, `sac_throughput`,
`sac_learning`, `sac_grad_variance`, `sac_grad_variance_dims`,
`moe_throughput`, `moe_breakdown`, `vae_estimators`, `bernoulli_cost` or
`iwae_snr`. Each module's docstring gives its commands; the figures they
produced are recorded in docs/benchmarks.md and docs/results.md.

Command line. Every benchmark uses absl flags, the flags library of the
launchers in `launch/`, in one pattern:

- The module defines its flags at import into its own
  `FLAGS = flags.FlagValues()` (every `flags.DEFINE_*` gets
  `flag_values=FLAGS`), never into absl's global `flags.FLAGS`. Importing
  several benchmarks, or a benchmark and a launcher, into one process (as
  the tests do) therefore defines no flag twice, and two benchmarks may use
  the same flag name (`--out`, `--repeats`, `--experts`).
- `main(argv=None)` starts with `command_line.parse(FLAGS, argv,
  doc=__doc__)`; `argv` is the arguments after the program name
  (`sys.argv[1:]` by default). Parsing first resets every flag to its
  default, so `main` can be called repeatedly from Python.
- The module ends with `if __name__ == "__main__": main()` (the MoE
  benchmarks first re-execute themselves with huge pages,
  `launch.hugepages`).
- The spelling is absl's: `--name=value`, booleans `--name` and `--noname`,
  lists comma-separated (`--experts=32,64`, `command_line.
  define_integer_list`). `--help` prints the module docstring and its
  flags; an unknown flag, a bad value or a missing required flag prints
  `error: ...` to stderr and exits with status 2 (`command_line.
  usage_error`, also used for checks that involve several flags).

Outputs. Every JSON and markdown file a benchmark writes goes through
`common.atomic_files`, so an interrupted run leaves the previous file or the
new one, never a truncated one.
"""

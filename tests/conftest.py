"""Suite-wide setup: one persistent XLA compilation cache per test session.

Many tests compile the same programs again: each trainer run builds its
jitted functions afresh, and the resume and determinism tests run a trainer
two or three times. JAX's persistent compilation cache
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html) serves an
identical program's executable from disk instead of compiling it again; the
key covers the program, the compile options, the flags and the devices. The
cache is a directory made for the session and deleted after it, so no test
reads an executable from another session. It is named in the environment as
well, so launchers that tests start in subprocesses share it.
"""

import os
import shutil
import tempfile

import jax

_CACHE_VARIABLES = {
    "JAX_COMPILATION_CACHE_DIR": None,  # Set in pytest_configure.
    # Cache programs that take 0.1 s or more to compile (JAX's default, 1 s,
    # leaves out most of the test presets' programs).
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
_cache_dir = None


def pytest_configure(config):
  global _cache_dir
  _cache_dir = tempfile.mkdtemp(prefix="stochgrad-jax-cache-")
  values = dict(_CACHE_VARIABLES, JAX_COMPILATION_CACHE_DIR=_cache_dir)
  os.environ.update(values)
  jax.config.update("jax_compilation_cache_dir", _cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(values["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  if _cache_dir is not None:
    shutil.rmtree(_cache_dir, ignore_errors=True)

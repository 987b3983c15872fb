"""The persistent compilation cache: compiled XLA programs kept on disk between processes.

A process that compiles a program already compiled by an earlier one (same program, same
device, same JAX/XLA versions) loads it from the cache instead of compiling it again; the GPU
autotuning results are cached next to it. `enable()` turns it on for the process, in this order
of precedence: the `cache_dir` argument, `$JAX_COMPILATION_CACHE_DIR`, then the user cache
directory `$XDG_CACHE_HOME/r3vae_jax/xla` (`~/.cache/r3vae_jax/xla` when unset).
"""
from __future__ import annotations

import os

import jax

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
ENV_MIN_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
DEFAULT_MIN_TIME_S = 0.5


def default_dir() -> str:
  """The user cache directory of compiled programs: `$XDG_CACHE_HOME/r3vae_jax/xla`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "r3vae_jax", "xla")


def enable(cache_dir: str | None = None, min_compile_time_s: float | None = None) -> str:
  """Turns the persistent compilation cache on for this process.

  Args:
    cache_dir: where compiled programs go (created if missing); None: `$JAX_COMPILATION_CACHE_DIR`
      when set, else `default_dir()`.
    min_compile_time_s: programs that compiled faster than this are not written (a cache hit
      would save less than it costs to read); None: `$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`
      when set, else `DEFAULT_MIN_TIME_S`.

  Returns:
    The cache directory in use.
  """
  path = cache_dir or os.environ.get(ENV_DIR) or default_dir()
  if min_compile_time_s is None:
    text = os.environ.get(ENV_MIN_TIME) or str(DEFAULT_MIN_TIME_S)
    try:
      min_compile_time_s = float(text)
    except ValueError as e:
      raise ValueError(f"${ENV_MIN_TIME}={text!r}: expected a number of seconds") from e
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f"compile cache directory {path!r} cannot be created ({e}); expected "
                     f"a writable directory (set ${ENV_DIR})") from e
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path

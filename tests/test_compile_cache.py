"""The persistent compilation cache: where it lives and that a second process reads it."""
import os
import subprocess
import sys

import jax
import pytest

from r3vae_jax import compile_cache

_PROGRAM = """
import sys, time
from r3vae_jax import compile_cache
compile_cache.enable(sys.argv[1], min_compile_time_s=0.0)
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() + jnp.cumsum(x, axis=0).max())
f(jnp.ones((64, 64))).block_until_ready()
print("hits", len(hits))
"""


def test_default_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path / "r3vae_jax" / "xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert compile_cache.default_dir().endswith(os.path.join(".cache", "r3vae_jax", "xla"))


def test_enable_prefers_argument_then_environment(monkeypatch, tmp_path):
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  min_time = lambda: jax.config.jax_persistent_cache_min_compile_time_secs
  try:
    monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path / "env"))
    monkeypatch.delenv(compile_cache.ENV_MIN_TIME, raising=False)
    assert compile_cache.enable() == str(tmp_path / "env")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "env")
    assert min_time() == compile_cache.DEFAULT_MIN_TIME_S
    assert compile_cache.enable(str(tmp_path / "arg")) == str(tmp_path / "arg")
    assert (tmp_path / "arg").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="compile cache directory"):
      compile_cache.enable(str(blocker / "sub"))
    monkeypatch.setenv(compile_cache.ENV_MIN_TIME, "0")  # every program, however quick
    compile_cache.enable()
    assert min_time() == 0.0
    compile_cache.enable(min_compile_time_s=2.0)
    assert min_time() == 2.0
    monkeypatch.setenv(compile_cache.ENV_MIN_TIME, "fast")
    with pytest.raises(ValueError, match="JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='fast'"):
      compile_cache.enable()
  finally:
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_a_second_process_finds_the_program_in_the_cache(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV_DIR}
  env["JAX_PLATFORMS"] = "cpu"
  run = lambda: subprocess.run([sys.executable, "-c", _PROGRAM, str(tmp_path)], env=env,
                               check=True, timeout=120, capture_output=True, text=True).stdout
  assert "hits 0" in run()
  assert any(p.is_file() for p in tmp_path.iterdir()), "the first process wrote no program"
  second = run()
  assert "hits" in second and "hits 0" not in second

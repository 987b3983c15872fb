"""Experiment configs: Python files whose `get_config(arg)` returns an ml_collections ConfigDict.

  load("beauty:r3vae")                      # a config of this package by name, then its argument
  load("path/to/my_config.py:rqvae")        # or any config file
  apply_overrides(config, [("train.lr", "5e-4")])   # what `--config.train.lr=5e-4` does

A spec is `NAME[:ARG]`: NAME is a config of this package (`names()`: default, beauty, ...) or
the path of a Python file; ARG goes to its `get_config(arg)`. Every mistake is a `ConfigError`
(a ValueError) of one line that says what to write instead.
"""
from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Modules of this folder that are no config (helpers of the configs).
_HELPERS = ("__init__", "ablations", "paths", "presets", "validate")


class ConfigError(ValueError):
  """A config spec, file or override that cannot be used; the message is one line."""


def names() -> list[str]:
  """The configs of this package, by name (`default`, `beauty`, ...)."""
  return sorted(f[:-3] for f in os.listdir(PACKAGE_DIR)
                if f.endswith(".py") and f[:-3] not in _HELPERS)


def resolve(spec: str) -> tuple[str, str | None]:
  """`NAME[:ARG]` or `PATH[:ARG]` -> (config file path, ARG or None).

  A name of this package wins over a file of that name in the working directory only when it
  has no `/` and no `.py`, so `--config=beauty:r3vae` works from any directory and
  `--config=r3vae_jax/configs/beauty.py:r3vae` keeps working from the repository root.
  """
  path, sep, arg = spec.partition(":")
  if not path:
    raise ConfigError(f"--config={spec}: expected NAME[:ARG] with NAME one of {names()} or a "
                      "config file path")
  if "/" not in path and os.sep not in path and not os.path.splitext(path)[1]:
    if path not in names():
      near = difflib.get_close_matches(path, names(), n=1)
      hint = f"did you mean --config={near[0]}{sep}{arg}? " if near else ""
      raise ConfigError(f"{hint}--config={spec}: no config named {path!r} (one of {names()}, "
                        "or a config file path)")
    path = os.path.join(PACKAGE_DIR, path + ".py")
  elif not os.path.isfile(path):
    package_file = os.path.join(PACKAGE_DIR, os.path.basename(path))
    # `r3vae_jax/configs/x.py` named from outside the repository: the installed package's file.
    if os.path.normpath(path).endswith(os.path.join("r3vae_jax", "configs", os.path.basename(path))) \
        and os.path.isfile(package_file):
      path = package_file
    else:
      raise ConfigError(f"use --config=NAME[:ARG] with NAME one of {names()}, or an existing "
                        f"file: --config={spec}: no such file {path!r}")
  return path, (arg if sep else None)


def load(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of `spec` (`resolve`); the config file's own errors are one line naming it."""
  path, arg = resolve(spec)
  loader = importlib.machinery.SourceFileLoader(
      "r3vae_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module_spec = importlib.util.spec_from_loader(loader.name, loader)
  module = importlib.util.module_from_spec(module_spec)
  try:
    loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if get_config is None:
      raise ConfigError(f"{path}: defines no get_config(arg)")
    config = get_config(arg) if arg is not None else get_config()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # a config file may raise anything
    raise ConfigError(f"{path}: {type(e).__name__}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config returned {type(config).__name__}, expected an "
                      "ml_collections.ConfigDict")
  return config


def _parse_value(text: str, current: Any, flag: str) -> Any:
  """`text` as a value of `current`'s type (what `--config.FIELD=text` sets)."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"{flag}: expected true or false")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, float) and text.strip().lower() in ("nan", "inf", "-inf"):
      return float(text)
    if current is None:
      return text
    raise ConfigError(f"{flag}: expected {_type_name(current)}") from None
  if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value,
                                                                                      bool):
    return float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list, int, float, str)):
    return type(current)(value if isinstance(value, (tuple, list)) else (value,))
  if current is None or (type(value) is type(current)):  # pylint: disable=unidiomatic-typecheck
    return value
  raise ConfigError(f"{flag}: expected {_type_name(current)}")


def _type_name(value: Any) -> str:
  return {bool: "true or false", int: "an int", float: "a number", str: "a string",
          tuple: "a tuple such as (5,10)", list: "a list such as [5,10]"}.get(
              type(value), type(value).__name__)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
                    ) -> None:
  """Sets each (dotted field, text) of `overrides` on `config` in order, the text parsed as the
  field's type; an unknown field is a ConfigError with the nearest field's name."""
  for field, text in overrides:
    flag = f"--config.{field}={text}"
    *parents, leaf = field.split(".")
    node, where = config, "config"
    for part in parents + [leaf]:
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        keys = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        near = difflib.get_close_matches(part, keys, n=1)
        hint = f"did you mean --config.{where[7:] + '.' if where != 'config' else ''}{near[0]}? " \
            if near else ""
        raise ConfigError(f"{hint}{flag}: no such config field {part!r} in {where}")
      if part != leaf:
        node, where = node[part], f"{where}.{part}"
    if isinstance(node[leaf], (ml_collections.ConfigDict, dict)):
      raise ConfigError(f"{flag}: {where}.{leaf} is a group of fields; set one of "
                        f"{sorted(node[leaf].keys())}")
    value = _parse_value(text, node[leaf], flag)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"{flag}: {e}") from None

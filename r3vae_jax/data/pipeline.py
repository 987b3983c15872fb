"""The data stage: config -> Interactions (`prepare`) and item vectors (`item_vectors`).

`config.data.format` picks the reader (README "Data" lists the files each one wants):
  synthetic   the embedded catalogue (config.data.synthetic)
  iclrec      `uid i1 i2 …` file; item text from a RecBole `.item` (data.item_text_path) joined
              through P5 datamaps (data.item_map_path), as for Beauty
  p5          P5 sequential_data.txt + datamaps.json (data.item_map_path)
  recbole     `.inter` (data.path) + optional `.item` (data.item_text_path)
  amazon_raw  reviews_<Cat>[_5].json.gz (data.path) + meta_<Cat>.json.gz (data.item_text_path)
  ml1m        folder with ratings.dat, movies.dat
  hetrec      folder with user_artists.dat, artists.dat [, user_taggedartists-timestamps.dat]
  tfds        a TFDS dataset built by r3vae_jax/data/tfds (data.path = its data_dir)
`config.vectors.source` picks the item vectors: minilm-text | interactions-svd | npy | synthetic.
"""
from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from r3vae_jax import io
from r3vae_jax.data import dataset, synthetic, table
from r3vae_jax.data.dataset import Interactions
from r3vae_jax.data.readers import amazon_raw, hetrec, iclrec, movielens, p5, recbole
from r3vae_jax.data.splits import Splits
from r3vae_jax.data.vectors import interactions, npy

FORMATS = ("synthetic", "iclrec", "p5", "recbole", "amazon_raw", "ml1m", "hetrec", "tfds")
VECTOR_SOURCES = ("minilm-text", "interactions-svd", "npy", "synthetic")


def _name(config: Any) -> str:
  return config.dataset if config.dataset else config.data.format


def _text_fields(config: Any) -> tuple[str, ...]:
  return tuple(config.data.text_fields)


def _recbole_text(config: Any) -> dict | None:
  path = config.data.item_text_path
  return recbole.read_item_text(path, _text_fields(config)) if path else None


def _read_log(config: Any) -> tuple[table.RawLog, dict | None, bool]:
  """Returns (log, item key -> ItemInfo or None, whether to renumber items by first sight)."""
  d = config.data
  fmt = d.format
  if fmt in ("iclrec", "p5"):
    log = iclrec.read_user_sequences(d.path)
    if d.item_map_path:
      log = p5.apply_datamaps(log, d.item_map_path, d.path)
    elif fmt == "p5":
      raise io.ArtifactError("data.format=p5 needs data.item_map_path (the P5 datamaps.json)")
    return log, _recbole_text(config), False
  if fmt == "recbole":
    log = recbole.read_inter(d.path, first_only=d.first_only)
    return log, _recbole_text(config), True
  if fmt == "amazon_raw":   # meta is read after k-core, for the surviving ASINs only
    return amazon_raw.read_reviews(d.path), None, True
  if fmt == "ml1m":
    return (*movielens.read_ml1m(d.path), True)
  if fmt == "hetrec":
    return (*hetrec.read_hetrec(d.path, first_only=d.first_only), True)
  raise ValueError(f"config.data.format={fmt!r}; expected one of {FORMATS}")


def prepare(config: Any) -> Interactions:
  """Reads the configured dataset, applies k-core (config.data.min_core) and attaches item text."""
  fmt = config.data.format
  if fmt == "synthetic":
    return synthetic.make_synthetic(config.data.synthetic)[0]
  if fmt == "tfds":  # tensorflow_datasets is an optional extra: imported only here
    from r3vae_jax.data.tfds import common  # pylint: disable=g-import-not-at-top
    common.prepare_builder(_name(config), config.data.path, config.data.manual_dir)
    return common.load_interactions(_name(config), config.data.path)
  log, info, renumber = _read_log(config)
  if config.data.min_core > 1:
    log = table.k_core(log, config.data.min_core)
  if renumber:
    log = table.first_seen_ids(log)
  if fmt == "amazon_raw" and config.data.item_text_path:
    info = amazon_raw.read_meta(config.data.item_text_path, _text_fields(config),
                                keys=set(log.item_keys))
  inter = table.to_interactions(_name(config), log, info, source=config.data.path)
  dataset.validate(inter, source=config.data.path)
  logging.info("prepared %s", dataset.stats(inter))
  return inter


def item_vectors(config: Any, inter: Interactions, splits: Splits) -> np.ndarray:
  """float32[num_items, D] from config.vectors.source; `splits.train` feeds interactions-svd."""
  v = config.vectors
  if v.source == "synthetic":
    if inter.name != "synthetic":
      raise ValueError(f"vectors.source=synthetic only fits the synthetic dataset, not "
                       f"{inter.name!r}")
    return synthetic.make_synthetic(config.data.synthetic)[1]
  if v.source == "npy":
    return npy.load_vectors(v.path, inter.num_items)
  if v.source == "interactions-svd":
    return interactions.ppmi_svd(splits.train, inter.num_items, dim=v.svd_dim, window=v.svd_window,
                                 seed=config.seed)
  if v.source == "minilm-text":
    if inter.item_text is None:
      raise io.ArtifactError(f"dataset {inter.name!r} has no item text; set vectors.source to "
                             "interactions-svd or npy, or give data.item_text_path")
    # pylint: disable-next=g-import-not-at-top
    from r3vae_jax.data.vectors import text_encoder  # loads flax only when text is encoded
    return text_encoder.encode_texts(inter.item_text, model_dir=v.model_dir,
                                     batch_size=v.batch_size, max_tokens=v.max_tokens)
  raise ValueError(f"config.vectors.source={v.source!r}; expected one of {VECTOR_SOURCES}")


def vectors_label(config: Any) -> str:
  """What the item vectors are, for labelling results: "interactions-svd(dim=128,window=5,…)"."""
  v = config.vectors
  if v.source == "minilm-text":
    fields = "+".join(config.data.text_fields)
    return f"minilm-text({v.model_dir or 'all-MiniLM-L6-v2'},fields={fields})"
  if v.source == "interactions-svd":
    return f"interactions-svd(dim={v.svd_dim},window={v.svd_window},train-only)"
  if v.source == "npy":
    return f"{v.label} (npy {os.path.basename(v.path)})" if v.label else f"npy({v.path})"
  if v.source == "synthetic":
    return "synthetic(topic centres + noise)"
  raise ValueError(f"config.vectors.source={v.source!r}; expected one of {VECTOR_SOURCES}")

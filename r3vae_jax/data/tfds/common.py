"""The shared TFDS builder: files (downloaded or from manual_dir) -> leave-one-out splits.

Each split holds one example per user, `user_id` (dense, file order), `history` int32[T] and
`target` int32, so that history + [target] is a chronological prefix of the user's sequence:
  train       seq[:-3] -> seq[-3]   (history + target = Splits.train, the training sequence)
  validation  seq[:-2] -> seq[-2]
  test        seq[:-1] -> seq[-1]   (history + target = the full sequence)
Histories are stored in full (truncate with splits.pad_histories). The builder's metadata holds
num_items, the standard statistics, item titles and item text (when the source has them).
Files are written as array_record, so `builder.as_data_source()` reads them without TensorFlow.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from r3vae_jax import io
from r3vae_jax.data import dataset, splits
from r3vae_jax.data.dataset import Interactions

BUILDERS = ("beauty", "sports", "toys", "lastfm", "ml1m")
ICLREC_DATA = ("https://raw.githubusercontent.com/salesforce/ICLRec/"
               "4afb54a036ebbf4166ed5858122d89c0642251a7/data/")
FILE_FORMAT = "array_record"


@dataclasses.dataclass(frozen=True)
class Resource:
  """One input file: its public URL and the names it may have in manual_dir."""
  url: str
  names: tuple[str, ...]
  extract: bool = False   # the URL is an archive; `names` are paths inside it


class SequenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the per-dataset builders; subclasses set RESOURCES, SUBDIR and `read`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Leave-one-out splits, full histories, item text in metadata."}
  RESOURCES: dict[str, Resource] = {}
  OPTIONAL: tuple[str, ...] = ()   # resource roles that may be absent from manual_dir
  SUBDIR = ""                      # manual_dir may hold the files directly or in this subfolder
  DESCRIPTION = ""
  CITATION = ""

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # pylint: disable=invalid-name
    wanted = "; ".join(f"{role}: one of {', '.join(r.names)} (public copy: {r.url})"
                       for role, r in self.RESOURCES.items())
    return (f"Put the files in manual_dir or in manual_dir/{self.SUBDIR}/ — {wanted}. "
            "Without manual files the builder downloads the public copies.")

  @abc.abstractmethod
  def read(self, paths: dict[str, str | None]) -> Interactions:
    """Reads the resolved files (role -> path, None for an absent optional one)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "user_id": np.int64,
            "history": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "target": np.int32,
        }),
        metadata=tfds.core.MetadataDict(),
        citation=self.CITATION,
    )

  def _resolve(self, dl_manager) -> dict[str, str | None]:
    try:
      manual = str(dl_manager.manual_dir)
    except AssertionError:
      manual = None
    if manual is not None:
      return {role: self._find_manual(manual, role, r) for role, r in self.RESOURCES.items()}
    paths = {}
    for role, r in self.RESOURCES.items():
      if r.extract:
        paths[role] = os.path.join(str(dl_manager.download_and_extract(r.url)), r.names[0])
      else:
        paths[role] = str(dl_manager.download(r.url))
    return paths

  def _find_manual(self, manual: str, role: str, r: Resource) -> str | None:
    for folder in (manual, os.path.join(manual, self.SUBDIR)):
      for name in r.names:
        if os.path.exists(os.path.join(folder, name)):
          return os.path.join(folder, name)
    if role in self.OPTIONAL:
      return None
    raise io.ArtifactError(f"{manual}: no {' or '.join(r.names)} for {self.name} ({role}); "
                           f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  def _split_generators(self, dl_manager):
    inter = self.read(self._resolve(dl_manager))
    dataset.validate(inter, source=self.name)
    self.info.metadata.update({
        "num_items": inter.num_items, "stats": dataset.stats(inter),
        "item_titles": inter.item_titles, "item_text": inter.item_text})
    s = splits.leave_one_out(inter.sequences)
    train_hist = [t[:-1] for t in s.train]
    train_tgt = np.array([t[-1] if t.size else -1 for t in s.train], np.int32)
    if (train_tgt < 0).any():
      raise io.ArtifactError(f"{self.name}: user {int(np.argmax(train_tgt < 0))} has fewer than "
                             "4 items; train examples need one")
    return {
        "train": self._generate_examples(train_hist, train_tgt),
        "validation": self._generate_examples(s.valid_history, s.valid_target),
        "test": self._generate_examples(s.test_history, s.test_target),
    }

  def _generate_examples(self, histories, targets) -> Iterator[tuple[int, dict]]:
    for u, (h, t) in enumerate(zip(histories, targets)):
      yield u, {"user_id": u, "history": np.asarray(h, np.int32), "target": np.int32(t)}


def builder_class(name: str) -> type[SequenceBuilder]:
  """Imports r3vae_jax.data.tfds.<name> and returns its builder class."""
  if name not in BUILDERS:
    raise ValueError(f"no TFDS builder {name!r}; expected one of {BUILDERS}")
  module = importlib.import_module(f"r3vae_jax.data.tfds.{name}.{name}_dataset_builder")
  return module.Builder


def prepare_builder(name: str, data_dir: str, manual_dir: str = "") -> SequenceBuilder:
  """Builds (if needed) the array_record dataset; manual_dir "" downloads the public files."""
  builder = builder_class(name)(data_dir=data_dir, file_format=FILE_FORMAT)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=config)
  return builder


def load_interactions(name: str, data_dir: str) -> Interactions:
  """Rebuilds the Interactions of a prepared dataset from its test split (no TensorFlow)."""
  builder = builder_class(name)(data_dir=data_dir, file_format=FILE_FORMAT)
  if not builder.is_prepared():
    raise io.ArtifactError(
        f"{data_dir}: TFDS dataset {name!r} is not prepared; run python -m "
        f"r3vae_jax.data.tfds.build --name={name} --data_dir={data_dir}")
  source = builder.as_data_source()["test"]
  rows = sorted(source.__getitems__(list(range(len(source)))), key=lambda ex: int(ex["user_id"]))
  sequences = [np.append(ex["history"], ex["target"]).astype(np.int32) for ex in rows]
  meta = builder.info.metadata
  return Interactions(name=name, num_items=int(meta["num_items"]), sequences=sequences,
                      item_titles=meta.get("item_titles"), item_text=meta.get("item_text"))

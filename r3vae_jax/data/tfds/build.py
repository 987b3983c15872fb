"""Builds one TFDS dataset (array_record) from its public files or a local copy.

  # online: downloads the public files into data_dir/downloads
  python -m r3vae_jax.data.tfds.build --name=beauty --data_dir=~/tensorflow_datasets
  # offline: from files already on disk (the folder, or a parent with amazon_beauty/ etc.)
  python -m r3vae_jax.data.tfds.build --name=beauty --data_dir=~/tensorflow_datasets \
      --manual_dir=../shared/data
Prints the standard statistics as one JSON line.
"""
import json
import os

from absl import app
from absl import flags

from r3vae_jax.data.tfds import common

_NAME = flags.DEFINE_enum("name", "beauty", common.BUILDERS, "dataset to build")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data_dir")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "local copy of the files; '' = download")


def main(argv):
  del argv
  data_dir = os.path.expanduser(_DATA_DIR.value)
  manual = os.path.expanduser(_MANUAL_DIR.value)
  builder = common.prepare_builder(_NAME.value, data_dir, manual)
  print(json.dumps(builder.info.metadata["stats"]))


if __name__ == "__main__":
  app.run(main)

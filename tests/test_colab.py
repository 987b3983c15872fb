"""The Colab demo notebook: committed with its outputs (kept current by `python
colab/execute.py`), and runs end to end offline on CPU."""
import importlib.util
import json
import os
import pathlib

import nbclient
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "colab" / "r3vae_demo.ipynb"
REPO = NOTEBOOK.parents[1]


def _execute_module():
  spec = importlib.util.spec_from_file_location("colab_execute", NOTEBOOK.parent / "execute.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _images(nb) -> list:
  return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
          if "image/png" in out.get("data", {})]


def test_notebook_is_committed_with_its_outputs():
  """A reader on the web sees every cell's output and the 4 figures, from one run in order."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  counts = [cell.execution_count for cell in code]
  assert None not in counts, "run `python colab/execute.py` and commit the notebook"
  assert counts == sorted(counts), "outputs of one run, top to bottom"
  assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
  assert len(_images(nb)) == 4


# Run after the notebook's config cell: a smaller catalogue and fewer epochs, the same models.
# Every cell still runs; the test checks that they work, `colab/execute.py` shows the results.
SHRINK = """\
config.data.synthetic.update(num_items=200, num_users=200)
for name in ("rqvae", "r3vae"):
  config[name].update(epochs=2, eval_every=2)
config.train.update(epochs=1)
"""


def test_notebook_runs_offline_on_cpu(tmp_path):
  """Executes every cell headlessly (synthetic data made smaller, one CPU device); any error
  fails."""
  # The kernel inherits the session's persistent compilation cache (tests/conftest.py sets it
  # in the environment), as the other processes of the session do.
  nb = nbformat.read(NOTEBOOK, as_version=4)
  at = next(i for i, cell in enumerate(nb.cells) if cell.get("id") == "cell-05")
  assert "config.data.synthetic.update(" in nb.cells[at].source
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(SHRINK))
  small = tmp_path / "colab" / NOTEBOOK.name
  small.parent.mkdir()
  nbformat.write(nb, small)
  nb, elapsed = _execute_module().execute(small, str(tmp_path / "demo"), timeout=600)
  print(f"notebook executed in {elapsed:.0f}s")

  text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream")
  images = _images(nb)
  assert "dataset: synthetic" in text
  assert len(images) == 4, f"expected the 4 plots, got {len(images)} images"
  assert text.count("top 10:") == 3 and "held out:" in text
  assert "test recall@5=" in text
  for stage in ("data", "vectors.npy", "tokenizer", "recommender", "results.json"):
    assert (tmp_path / "demo" / "r3vae" / stage).exists(), stage
  assert (tmp_path / "demo" / "rqvae" / "tokenizer" / "sid_metrics.json").exists()
  diger = json.loads((tmp_path / "demo" / "diger" / "results.json").read_text())
  assert diger["tokenizer"] == "diger" and diger["variant"] == "detached_follow"
  assert "SIDs that differ from the pretrained RQ-VAE" in text
  assert text.count("test recall@10=") == 2  # R3-VAE's and DIGER's, side by side


def test_plots_say_which_file_is_missing(tmp_path):
  """The notebook's plots degrade to a message naming the missing file, never an exception."""
  from r3vae_jax import plots  # pylint: disable=g-import-not-at-top
  empty = str(tmp_path)
  figures = {"tokenizer/metrics.jsonl": plots.codebook_usage({"R3-VAE": empty}),
             "tokenizer/sid_metrics.json": plots.sid_quality({"R3-VAE": empty}),
             "recommender/metrics.jsonl": plots.training_curves(empty),
             "tokenizer/sid_table.npy": plots.item_projection({"R3-VAE": empty})}
  for missing_file, fig in figures.items():
    text = "".join(t.get_text() for ax in fig.axes for t in ax.texts).replace("\n", "")
    assert missing_file in text, text
    assert plots.to_png(fig).startswith(b"\x89PNG"), missing_file


def test_install_cell_asks_for_the_repository_url(tmp_path):
  """Outside a checkout, with r3vae_jax not importable and no URL given, the install cell stops
  with a message naming the REPO_URL field (it never installs from an invented address)."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  install = next(c for c in nb.cells if c.get("id") == "cell-02")
  assert 'REPO_URL = ""  # @param' in install.source
  # CI installs the package, so hide it from the kernel the way a fresh Colab runtime lacks it.
  hide = nbformat.v4.new_code_cell(
      "import importlib.util\n"
      "_find_spec = importlib.util.find_spec\n"
      "importlib.util.find_spec = lambda name, *args: (\n"
      "    None if name == 'r3vae_jax' else _find_spec(name, *args))")
  nb.cells = [hide, install]
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "R3VAE_REPO_URL")}
  (tmp_path / "colab").mkdir()
  client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path / "colab")}})
  with pytest.raises(nbclient.exceptions.CellExecutionError, match="fill in REPO_URL"):
    client.execute(env=env)

"""Runs the demo notebook headlessly and saves it with its outputs (figures included).

  python colab/execute.py [--out PATH] [--timeout S]

The synthetic dataset on the CPU, one device, a fresh workdir: what a reader on the web sees is
what this command printed and drew. Run it after changing the notebook or the pipeline, and
commit `colab/r3vae_demo.ipynb` with its outputs.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import nbclient
import nbformat

NOTEBOOK = pathlib.Path(__file__).resolve().parent / "r3vae_demo.ipynb"
REPO = NOTEBOOK.parents[1]
DEFAULT_WORKDIR = "/tmp/r3vae_demo"  # the notebook's workdir when R3VAE_DEMO_WORKDIR is unset


def execute(notebook: pathlib.Path, workdir: str, timeout: int = 900) -> tuple[
    nbformat.NotebookNode, float]:
  """(the executed notebook, its wall time in seconds): synthetic data, CPU, one device."""
  nb = nbformat.read(notebook, as_version=4)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user has
  env.update(JAX_PLATFORMS="cpu", R3VAE_DEMO_DATASET="synthetic", R3VAE_DEMO_WORKDIR=workdir,
             MPLBACKEND="Agg",
             PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(notebook.parent)}})
  start = time.time()
  client.execute(env=env)
  return nb, time.time() - start


def show_default_workdir(output: dict, workdir: str) -> None:
  """Rewrites the temporary `workdir` in an output's text as the notebook's default workdir
  (`R3VAE_DEMO_WORKDIR` unset), so the saved outputs read as a reader's own run."""
  if isinstance(output.get("text"), str):
    output["text"] = output["text"].replace(workdir, DEFAULT_WORKDIR)
  data = output.get("data", {})
  if isinstance(data.get("text/plain"), str):
    data["text/plain"] = data["text/plain"].replace(workdir, DEFAULT_WORKDIR)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(NOTEBOOK), help="where to write the executed notebook")
  parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as workdir:
    nb, seconds = execute(NOTEBOOK, workdir, args.timeout)
  for cell in nb.cells:  # no machine-specific execution timestamps or paths in the committed file
    cell.get("metadata", {}).pop("execution", None)
    for output in cell.get("outputs", []):
      show_default_workdir(output, workdir)
  nbformat.write(nb, args.out)
  print(f"{args.out}: executed in {seconds:.0f}s")


if __name__ == "__main__":
  main()

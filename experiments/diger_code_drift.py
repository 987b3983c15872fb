"""How far a DIGER run moved its tokenizer from the pretrained RQ-VAE it started from.

  python experiments/diger_code_drift.py OUT.json WORKDIR [WORKDIR ...]

For each `--mode=all` DIGER workdir (it holds config.json, vectors.npy, the pretrained
tokenizer/<pretrain>_ckpt and the best epoch's diger/model), per SID level:

- `codeword_rms`: root mean square of one coordinate of the codewords the pretrained table uses,
  the scale a step of the tokenizer's Adam (~lr per coordinate) is measured against;
- `margin_median` / `margin_p10`: over the items, distance to the second-nearest codeword minus
  distance to the nearest (pretrained tokenizer, that level's residual);
- `codeword_shift_median`: median over those codewords of |c_final - c_pretrained| / |c_pretrained|;
- `code_changed`: share of items whose code at this level differs between the pretrained
  tokenizer's table and the saved one (the best epoch's tokenizer), and `prefix_changed`: share
  whose codes up to this level differ (`quantize.sid_changes`).

Plus `encoder_shift` (|W_final - W_pretrained| / |W_pretrained| over all encoder weights) and
`sid_changed` (share of items whose saved SID, collision token included, differs from the one the
pretrained tokenizer gives).
"""
import json
import os
import sys

from flax import nnx
import jax
import ml_collections
import numpy as np

from r3vae_jax import checkpoint
from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.diger import train as diger_train
from r3vae_jax.tokenizer import sid_table as sid_lib
from r3vae_jax.tokenizer import programs as tok_programs


def level_stats(latents: np.ndarray, books: np.ndarray, codes: np.ndarray) -> list[dict]:
  """Per level: codeword scale and margins of the greedy residual assignment `codes`.

  Args:
    latents: float[N, D] encoder outputs; books: float[L, K, D]; codes: int[N, L] (these books).
  """
  out, residual = [], latents
  for level, book in enumerate(books):
    dist = np.sqrt(((residual[:, None, :] - book[None]) ** 2).sum(-1))
    nearest = np.sort(dist, axis=1)
    margin = nearest[:, 1] - nearest[:, 0]
    used = book[np.unique(codes[:, level])]
    out.append({"codeword_rms": float(np.sqrt(np.mean(used ** 2))),
                "margin_median": float(np.median(margin)),
                "margin_p10": float(np.percentile(margin, 10))})
    residual = residual - book[codes[:, level]]
  return out


def leaves_by_path(tree) -> dict[str, np.ndarray]:
  """A parameter tree's leaves keyed by their path ("layers/0/kernel"), every key as a string:
  a restored checkpoint keys a module list's entries '0', '1', ..., the live module 0, 1, ..."""
  return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def drift(workdir: str) -> dict:
  """The module docstring's measures for one DIGER workdir."""
  config = ml_collections.ConfigDict(io.read_json(os.path.join(workdir, "config.json")))
  if config.tokenizer != "diger":
    raise io.ArtifactError(f"{workdir}/config.json: tokenizer {config.tokenizer!r}, expected "
                           "a DIGER run")
  pre_dir = os.path.join(workdir, "tokenizer", f"{config.diger.pretrain}_ckpt")
  model_dir = os.path.join(workdir, diger_train.DIGER_DIR, "model")
  for path in (pre_dir, model_dir):
    if not os.path.isdir(path):
      raise io.ArtifactError(f"{path}: missing (a finished DIGER --mode=all workdir has it)")
  vectors = np.asarray(io.read_npy(os.path.join(workdir, "vectors.npy")), np.float32)
  pretrained = diger_train.load_pretrained_tokenizer(config, vectors, workdir)
  graphdef, pre_params = nnx.split(pretrained)
  # As host arrays: restored, they sit on one device, and `encode` spreads the items over the
  # mesh (several devices on a multi-GPU host).
  pre_params = jax.tree.map(np.asarray, nnx.to_pure_dict(pre_params))
  restored = checkpoint.restore(checkpoint.make_manager(model_dir, keep=1, async_save=False),
                                None)
  if restored is None:
    raise io.ArtifactError(f"{model_dir}: no checkpoint")
  final_params = restored[1]["tokenizer"]
  mesh = parallel.config_mesh(config)
  codes_pre, _ = tok_programs.encode(graphdef, pre_params, vectors, mesh)
  books_pre = np.asarray(pre_params["codebooks"])
  books_final = np.asarray(final_params["codebooks"])
  latents = np.asarray(pretrained.encode(vectors))
  table_pre = sid_lib.make_sid_table(codes_pre, config.sid.max_collisions)
  table_final = io.read_npy(os.path.join(workdir, diger_train.DIGER_DIR, "sid_table.npy"))
  changes = quantize.sid_changes(table_pre, table_final, codes_pre.shape[1])
  levels = level_stats(latents, books_pre, codes_pre)
  for level, stats in enumerate(levels):
    used = np.unique(codes_pre[:, level])
    before, after = books_pre[level, used], books_final[level, used]
    stats["codeword_shift_median"] = float(np.median(
        np.linalg.norm(after - before, axis=1) / np.linalg.norm(before, axis=1)))
    stats["code_changed"] = changes["code_changed"][level]
    stats["prefix_changed"] = changes["prefix_changed"][level]
  encoder_pre = leaves_by_path(pre_params["encoder"])
  encoder_final = leaves_by_path(final_params["encoder"])
  if encoder_pre.keys() != encoder_final.keys():
    raise io.ArtifactError(f"{model_dir}: encoder parameters {sorted(encoder_final)}, expected "
                           f"the pretrained tokenizer's {sorted(encoder_pre)}")
  delta = [encoder_final[k] - encoder_pre[k] for k in encoder_pre]
  return {"workdir": workdir, "variant": config.get("variant"), "seed": config.seed,
          "tokenizer_lr": config.diger.tokenizer_lr,
          "freeze_encoder": config.diger.freeze_encoder,
          "best_epoch": restored[2].get("best_epoch"),
          "encoder_shift": float(np.sqrt(sum(np.sum(d ** 2) for d in delta))
                                 / np.sqrt(sum(np.sum(x ** 2) for x in encoder_pre.values()))),
          "sid_changed": changes["sid_changed"],
          "levels": levels}


def main(out_path: str, workdirs: list[str]) -> None:
  result = {"kind": "diger_code_drift", "commit": io.source_commit(),
            "runs": [drift(w) for w in workdirs]}
  io.write_json(out_path, result)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  if len(sys.argv) < 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2:])

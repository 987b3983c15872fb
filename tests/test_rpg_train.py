"""RPG end to end on a small synthetic catalogue: SIDs, training, both decoders, the JSON."""
import json

import ml_collections
import pytest

from r3vae_jax.configs import default, rpg


def _tiny_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.synthetic.update(num_items=160, num_users=150, max_len=12, dim=16)
  c.tokenizer = "rpg"
  c.rpg = rpg.rpg_section("beauty")
  c.rpg.update(pca_dim=8, num_digits=4, codebook_size=8, d_model=16, num_heads=2, d_ff=32,
               max_len=10, num_beams=12, num_edges=8, propagation_steps=2, opq_outer_iters=2,
               opq_final_iters=3, eval_batch_size=64)
  c.train.update(epochs=2, eval_every_epochs=1, batch_size=64, lr=3e-3, warmup_steps=2,
                 length_buckets=(4,))
  return c


@pytest.mark.slow  # about 30 s of compiles on two cores: run with -m slow
def test_run_writes_rows_of_both_protocols_and_decoders(tmp_path):
  from r3vae_jax.rpg import train  # pylint: disable=g-import-not-at-top
  out = tmp_path / "rpg.json"
  result = train.run(_tiny_config(), str(tmp_path / "work"), str(out))
  saved = json.loads(out.read_text())
  assert saved["tokenizer"] == "rpg" and saved["kind"] == "experiment"
  for split in ("valid", "test"):
    for name in (split, f"{split}_full_ranking"):
      for key in (name, f"{name}_exact"):
        assert saved["metrics"][key]["users"] == 150
        assert 0.0 <= saved["metrics"][key]["ndcg@10"] <= saved["metrics"][key]["recall@10"] <= 1
  assert len(saved["sid_metrics"]["usage_per_codebook"]) == 4
  assert 0.0 <= saved["sid_metrics"]["collision_rate"] <= 1.0
  records = [json.loads(line) for line in (tmp_path / "work" / "rpg" / "metrics.jsonl").open()]
  assert [(r["kind"], r["epoch"]) for r in records] == [("train", 1), ("valid", 1), ("train", 2),
                                                        ("valid", 2)]
  assert result["train"]["finished"] == "epochs" and result["train"]["best_epoch"] in (1, 2)

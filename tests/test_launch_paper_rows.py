"""launch/paper_rows.sh: row arguments become main's config argument, each row's results JSON,
log and ranking files (where the row wrote them) land in OUTDIR under a name of plain characters,
and with JOBS > 1 the first row of each program runs alone until its first epoch (a stub `python3`
stands in for the pipeline, so this checks the script alone)."""
import os
import pathlib
import re
import stat
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

STUB = """#!/usr/bin/env bash
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
mkdir -p "$workdir"
echo "$*" > "$workdir/args.txt"
echo '{"kind": "experiment"}' > "$workdir/results.json"
case $workdir in *beauty*) mkdir -p "$workdir/recommender"; echo r > "$workdir/recommender/test_ranking.npz" ;; esac
"""


def _run_rows(tmp_path, stub_text: str, args: list[str], **env_vars: str):
  """Runs `launch/paper_rows.sh tmp_path/out ARGS` with `stub_text` as `python3` and
  ROW_TIMEOUT=600; returns (OUTDIR, WORKROOT)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  stub = bin_dir / "python3"
  stub.write_text(stub_text)
  stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
  out, workroot = tmp_path / "out", tmp_path / "rows"
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WORKROOT": str(workroot),
         "ROW_TIMEOUT": "600", **env_vars}
  env.pop("VECTORS_DIR", None)
  subprocess.run(["bash", str(ROOT / "launch" / "paper_rows.sh"), str(out), *args],
                 check=True, env=env, cwd=ROOT, capture_output=True, text=True)
  return out, workroot


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_rows_run_with_variants_and_land_under_plain_names(tmp_path, jobs):
  started = int(time.time())
  out, workroot = _run_rows(tmp_path, STUB, ["beauty:r3vae+no_sc:0", "toys:rqvae:1:interactions-svd",
                                             "--", "--config.x=1"], JOBS=jobs)
  names = sorted(p.name for p in out.iterdir())
  assert names == ["beauty_r3vae-no_sc_default_s0.json", "beauty_r3vae-no_sc_default_s0.log",
                   "beauty_r3vae-no_sc_default_s0.test_ranking.npz",
                   "toys_rqvae_interactions-svd_s1.json", "toys_rqvae_interactions-svd_s1.log"]
  args = (workroot / "beauty_r3vae-no_sc_default_s0" / "args.txt").read_text()
  assert "--config=r3vae_jax/configs/beauty.py:r3vae+no_sc " in args
  assert "--config.seed=0" in args and "--config.x=1" in args
  # ROW_TIMEOUT becomes the trainer's deadline (Unix seconds), so the row still evaluates.
  stop_at = int(re.search(r"--config\.train\.stop_at=(\d+)", args).group(1))
  assert started + 600 <= stop_at <= int(time.time()) + 600
  args = (workroot / "toys_rqvae_interactions-svd_s1" / "args.txt").read_text()
  assert "--config=r3vae_jax/configs/toys.py:rqvae,interactions-svd " in args


EPOCH_STUB = """#!/usr/bin/env bash
# At once DIGER's epoch-0 line (logged before training), after 1.5 s $EPOCH_LINE (a finished
# epoch; a relaunch resumes at a later one), after 2 s the end (the script polls every second).
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
mkdir -p "$workdir"
date +%s.%N > "$workdir/started"
echo "$*" > "$workdir/args.txt"
echo "I1205 train.py:495] diger epoch 0 (pretrained rqvae): usage [0.4 0.9 0.7]"
sleep 1.5
date +%s.%N > "$workdir/epoch_logged"
echo "$EPOCH_LINE"
sleep 0.5
echo '{"kind": "experiment"}' > "$workdir/results.json"
"""


@pytest.mark.parametrize("stagger,epoch_line", [
    ("1", "I1205 train.py:562] diger epoch 37: rec_ce 2.1 (7s)"),
    ("1", "I1205 train.py:451] recommender: epoch 1 took 14.67s: train step 3.99s"),
    ("0", "I1205 train.py:562] diger epoch 1: rec_ce 3.9 (70s)")])
def test_first_row_compiles_alone_then_the_batch_shares_its_deadline(tmp_path, stagger,
                                                                      epoch_line):
  _, workroot = _run_rows(tmp_path, EPOCH_STUB,
                          ["beauty:diger:0", "beauty:diger:1", "beauty:diger:2"], JOBS="2",
                          STAGGER=stagger, XLA_PYTHON_CLIENT_MEM_FRACTION="0.45",
                          EPOCH_LINE=epoch_line)
  rows = [workroot / f"beauty_diger_default_s{seed}" for seed in range(3)]
  first_epoch = float((rows[0] / "epoch_logged").read_text())
  second_start = float((rows[1] / "started").read_text())
  assert (second_start >= first_epoch) == (stagger == "1")
  stop_at = [int(re.search(r"stop_at=(\d+)", (r / "args.txt").read_text()).group(1))
             for r in rows]
  assert stop_at[0] == stop_at[1] < stop_at[2]  # the third row waited for a free slot


def test_each_programs_first_row_compiles_alone_while_compiled_seeds_run(tmp_path):
  """Two programs (datasets) of two seeds each: one cold compilation at a time, and the first
  program's second seed does not wait for the second program's compilation."""
  _, workroot = _run_rows(tmp_path, EPOCH_STUB,
                          ["beauty:diger:0", "beauty:diger:1", "toys:diger:0", "toys:diger:1"],
                          JOBS="4", XLA_PYTHON_CLIENT_MEM_FRACTION="0.225",
                          EPOCH_LINE="I1205 train.py:562] diger epoch 1: rec_ce 3.9 (70s)")
  times = {(d, s): {n: float((workroot / f"{d}_diger_default_s{s}" / n).read_text())
                    for n in ("started", "epoch_logged")} for d in ("beauty", "toys")
           for s in (0, 1)}
  beauty_epoch, toys_epoch = times["beauty", 0]["epoch_logged"], times["toys", 0]["epoch_logged"]
  assert times["toys", 0]["started"] >= beauty_epoch
  assert beauty_epoch <= times["beauty", 1]["started"] < toys_epoch
  assert times["toys", 1]["started"] >= toys_epoch

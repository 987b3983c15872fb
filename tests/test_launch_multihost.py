"""The multi-host launch scripts' dry runs: what each host would run, checked against how JAX
reads the cluster (SLURM's variables) and against main's flags."""
import os
import pathlib
import re
import shlex
import subprocess

from jax._src.clusters import slurm_cluster
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "r3vae_jax/configs/beauty.py:r3vae"


def dry_run(script, *args, **env):
  out = subprocess.run(["bash", str(REPO / "launch" / script), *args], capture_output=True,
                       text=True, env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **env},
                       timeout=30, check=False)
  return out


def hosts(stdout):
  """[(fields of a `host=... process_id=...` line, the command line under it)]."""
  lines = stdout.splitlines()
  return [(dict(kv.split("=", 1) for kv in line.split()), lines[i + 1].strip())
          for i, line in enumerate(lines) if line.startswith("host=")]


def test_slurm_dry_run_prints_what_jax_reads_on_every_task(monkeypatch):
  out = dry_run("slurm_multi_gpu.sh", "--dry-run", CONFIG, "gs://bucket/runs/b",
                "--config.train.lr=5e-4", NODES="gpu001 gpu002", TASKS_PER_NODE="2",
                JOB_ID="12345")
  assert out.returncode == 0, out.stderr
  tasks = hosts(out.stdout)
  assert [t["host"] for t, _ in tasks] == ["gpu001", "gpu001", "gpu002", "gpu002"]
  assert [int(t["process_id"]) for t, _ in tasks] == [0, 1, 2, 3]
  for fields, command in tasks:
    env = dict(kv.split("=", 1) for kv in shlex.split(command) if re.match(r"SLURM_\w+=", kv))
    for name, value in {**env, "SLURM_JOB_ID": "12345",
                        "SLURM_STEP_NODELIST": "gpu001,gpu002"}.items():
      monkeypatch.setenv(name, value)
    assert slurm_cluster.SlurmCluster.is_env_present()
    assert slurm_cluster.SlurmCluster.get_process_id() == int(fields["process_id"])
    assert slurm_cluster.SlurmCluster.get_process_count() == int(fields["process_count"]) == 4
    assert slurm_cluster.SlurmCluster.get_local_process_id() == int(fields["local_device"])
    assert slurm_cluster.SlurmCluster.get_coordinator_address(None, None) == fields["coordinator"]
    assert fields["workdir"] == "gs://bucket/runs/b"
    argv = [a for a in shlex.split(command) if not re.match(r"SLURM_\w+=", a)]
    assert argv == ["python", "-m", "r3vae_jax.main", f"--config={CONFIG}",
                    "--workdir=gs://bucket/runs/b", "--mode=all", "--config.train.lr=5e-4"]
  assert "note:" not in out.stdout  # a cloud workdir needs no shared mount


def test_slurm_dry_run_notes_a_local_workdir_and_names_what_is_missing():
  out = dry_run("slurm_multi_gpu.sh", CONFIG, "/shared/runs/b", DRY_RUN="1", NODES="n1",
                TASKS_PER_NODE="1")
  assert out.returncode == 0 and "must be a filesystem mounted on every node" in out.stdout
  out = dry_run("slurm_multi_gpu.sh", "--dry-run", CONFIG, "/shared/runs/b")
  assert out.returncode == 2 and out.stderr.startswith("error:") and "NODES" in out.stderr


def test_tpu_dry_run_prints_every_worker_and_the_ssh_command():
  out = dry_run("tpu_pod.sh", "--dry-run", CONFIG, "gs://bucket/runs/b", "--config.seed=3",
                TPU="my-v5e-32", ZONE="us-west4-a", WORKERS="4")
  assert out.returncode == 0, out.stderr
  workers = hosts(out.stdout)
  assert [(w["host"], int(w["process_id"]), int(w["process_count"])) for w, _ in workers] == [
      (f"worker-{i}", i, 4) for i in range(4)]
  assert {w["coordinator"] for w, _ in workers} == {"worker-0:8482"}
  assert {w["workdir"] for w, _ in workers} == {"gs://bucket/runs/b"}
  (command,) = {c for _, c in workers}
  assert shlex.split(command.split("&&", 1)[1]) == [
      "python", "-m", "r3vae_jax.main", f"--config={CONFIG}", "--workdir=gs://bucket/runs/b",
      "--mode=all", "--config.seed=3"]
  (ssh,) = [line for line in out.stdout.splitlines() if line.startswith("would run: ")]
  ssh = shlex.split(ssh.removeprefix("would run: "))
  assert ssh[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e-32",
                     "--zone=us-west4-a"] and "--worker=all" in ssh
  assert ssh[-1] == "--command=" + command


@pytest.mark.parametrize("env,missing", [({"ZONE": "z", "WORKERS": "2"}, "TPU"),
                                         ({"TPU": "t", "ZONE": "z"}, "WORKERS")])
def test_tpu_dry_run_names_what_is_missing(env, missing):
  out = dry_run("tpu_pod.sh", "--dry-run", CONFIG, "gs://b/r", **env)
  assert out.returncode != 0 and missing in out.stderr

"""The tracked tree speaks of the project, not of how it was made: no file names or lines that
count work sessions, name engineers or point at tracker issues (that history is `git log`)."""
import os
import re
import subprocess

from conftest import REPO

HISTORY = re.compile(r"session[ -]?[0-9]|engineer [a-z]\b|issue #?[0-9]", re.IGNORECASE)
SKIP_DIRS = {".git", ".wt", "__pycache__", ".pytest_cache", "build", "dist", ".eggs"}


def _tracked_files() -> list[str]:
  """Paths relative to the repository: `git ls-files` in a checkout, else every file."""
  if (REPO / ".git").exists():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]
  files = []
  for root, dirs, names in os.walk(REPO):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
    files += [os.path.relpath(os.path.join(root, n), REPO) for n in names]
  return files


def test_no_development_history_in_the_tracked_tree():
  hits = []
  for path in _tracked_files():
    if path == "tests/test_repo_hygiene.py":
      continue
    if HISTORY.search(path):
      hits.append(f"{path}: file name")
    full = REPO / path
    if not full.is_file():
      continue
    data = full.read_bytes()
    if b"\0" in data[:4096]:  # binary
      continue
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
      if HISTORY.search(line):
        hits.append(f"{path}:{number}: {line.strip()[:100]}")
  assert not hits, "development history in tracked files:\n" + "\n".join(hits)

"""MovieLens-1M: `ratings.dat` (UserID::MovieID::Rating::Timestamp) and `movies.dat`
(MovieID::Title::Genres, genres `|`-separated), latin-1 text, `::` separators."""
from __future__ import annotations

import os

import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources, text
from r3vae_jax.data.table import ItemInfo, RawLog, log_from_events


def _fields(line: str, n: int, path: str, lineno: int) -> list[str]:
  parts = line.split("::")
  if len(parts) != n:
    raise io.ArtifactError(f"{path}: line {lineno}: expected {n} '::'-separated fields, got "
                           f"{len(parts)} (truncated or malformed line)")
  return parts


def read_movies(path: str) -> dict[str, ItemInfo]:
  """Movie id -> (title, "Title (year). Genres: Action, Comedy.")."""
  info = {}
  for lineno, line in sources.numbered_lines(path, "MovieLens movies.dat", encoding="latin-1"):
    if not line:
      continue
    movie, title, genres = _fields(line, 3, path, lineno)
    _, body = text.compose({"title": title, "genres": genres.split("|")}, ("title", "genres"))
    info[movie] = ItemInfo(title=text.clean(title), text=body)
  return info


def read_ml1m(folder: str) -> tuple[RawLog, dict[str, ItemInfo]]:
  """Chronological sequences (ties in line order) and movie text of an ML-1M folder.

  Raises:
    ArtifactError: missing file, malformed line, non-integer timestamp, or a rated movie id
      absent from movies.dat (naming ratings.dat and the line).
  """
  ratings = os.path.join(folder, "ratings.dat")
  movies_path = os.path.join(folder, "movies.dat")
  movies = read_movies(movies_path)
  users, items, times = [], [], []
  for lineno, line in sources.numbered_lines(ratings, "MovieLens ratings.dat", encoding="latin-1"):
    if not line:
      continue
    user, movie, _, stamp = _fields(line, 4, ratings, lineno)
    if movie not in movies:
      raise io.ArtifactError(f"{ratings}: line {lineno}: movie id {movie} is not in {movies_path}")
    try:
      times.append(float(int(stamp)))
    except ValueError:
      raise io.ArtifactError(
          f"{ratings}: line {lineno}: timestamp {stamp!r} is not an integer") from None
    users.append(user)
    items.append(movie)
  if not users:
    raise io.ArtifactError(f"{ratings}: no ratings")
  return log_from_events(users, items, np.array(times, np.float64)), movies

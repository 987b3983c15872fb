"""Item text for the encoder: cleaned fields joined in a fixed, labelled order."""
from __future__ import annotations

import ast
import html
import re
from typing import Iterable, Mapping

_SPACE = re.compile(r"\s+")
_TITLE_FIELDS = ("title", "name", "movie_title")


def clean(value: str) -> str:
  """Unescapes HTML entities (`&amp;` -> `&`) and collapses whitespace (incl. newlines, tabs)."""
  return _SPACE.sub(" ", html.unescape(value)).strip()


def as_list(value) -> list[str]:
  """A field that may be a string, a list, a list of lists (Amazon categories) -> flat strings."""
  if value is None:
    return []
  if isinstance(value, str):
    return [value]
  out = []
  for v in value:
    out.extend(as_list(v))
  return out


def parse_token_seq(value: str) -> list[str]:
  """RecBole token_seq as circulated: `'Beauty', 'Makeup'` (Python literals) or space-separated."""
  value = value.strip()
  if not value:
    return []
  if value[0] in "'\"":
    try:
      return as_list(ast.literal_eval("[" + value + "]"))
    except (ValueError, SyntaxError):
      pass
  return value.split()


def compose(fields: Mapping[str, object], order: Iterable[str]) -> tuple[str, str]:
  """Builds (title, text) from named fields, in `order`; absent or empty fields are left out.

  The title field (title/name/movie_title) leads the text unlabelled; the others follow as
  `Field: a, b, c.` with duplicates removed, e.g.
  "Maybelline Brow & Eyeliner. Brand: Maybelline. Categories: Beauty, Makeup, Eyes."
  """
  title, parts = "", []
  for name in order:
    values = [clean(v) for v in as_list(fields.get(name))]
    values = [v for v in dict.fromkeys(values) if v]
    if not values:
      continue
    if name in _TITLE_FIELDS and not title:
      title = values[0]
      parts.insert(0, _sentence(title))
    else:
      parts.append(_sentence(f"{name.capitalize()}: {', '.join(values)}"))
  return title, " ".join(parts)


def _sentence(s: str) -> str:
  return s if s[-1] in ".!?" else s + "."

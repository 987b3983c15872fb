"""One module per public format; each returns a `table.RawLog` (and item text where it has any)."""

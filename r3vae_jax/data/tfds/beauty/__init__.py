"""TFDS builder `beauty`: Amazon 2014 Beauty 5-core with item text."""

"""TFDS builder `sports`: Amazon 2014 Sports_and_Outdoors 5-core."""

"""TFDS builder `toys`: Amazon 2014 Toys_and_Games 5-core."""

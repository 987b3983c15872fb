"""TFDS builder `toys`: Amazon 2014 Toys_and_Games 5-core (19,412 users, 11,924 items, 167,597 interactions)."""

"""TFDS builder `sports`: Amazon 2014 Sports_and_Outdoors 5-core (35,598 users, 18,357 items, 296,337 interactions)."""

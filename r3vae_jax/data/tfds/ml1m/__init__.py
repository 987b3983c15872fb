"""TFDS builder `ml1m`: MovieLens-1M ratings in time order; titles and genres as text."""

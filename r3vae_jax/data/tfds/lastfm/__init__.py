"""TFDS builder `lastfm`: HetRec-2011 LastFM tagging events (RecBole atomic files), 5-core."""

"""A table over many superfiles: manifest, commits, tombstones, compaction, cache."""

"""The run directory: its file system, lock, manifest, shards, response cache and stats."""

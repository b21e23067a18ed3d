"""Clients of a Quiver server that other parts of the project share (bulk ingest, schemas)."""

"""Namespaces and tables under one storage root, and access to object storage."""

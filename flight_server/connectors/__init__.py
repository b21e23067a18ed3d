"""Connectors that let other engines read and write Quiver tables (Spark)."""

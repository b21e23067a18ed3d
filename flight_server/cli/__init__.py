"""The ``quiver`` command line: ``serve``, ``sql``, ``ingest``, the admin commands, the
Iceberg catalog command, ``health`` and ``demo``."""

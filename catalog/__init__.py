"""Namespaces and tables under one storage root, and access to object storage.

``connect(uri, **options)`` is the embedded entry point: a ``Connection`` with
``create_table``, ``open_table``, ``list_tables`` and ``drop_table``.
"""

from quiver.catalog.connection import Connection, connect
from quiver.catalog.errors import InvalidTableNameError

__all__ = ["Connection", "InvalidTableNameError", "connect"]

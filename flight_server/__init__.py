"""The Flight SQL service, the SQL layer and the ``quiver`` command line."""

"""The Flight SQL protocol messages and their compiled Python modules."""

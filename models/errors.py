class ModelError(Exception):
    """A model problem the user can fix (unknown architecture, bad weights file...): one line."""

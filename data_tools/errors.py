"""Errors that carry a one-line message meant for the user."""


class DataError(Exception):
    """Bad data or options: the message is shown to the user as one line."""


class AudioDecodeError(DataError):
    """An audio file that cannot be decoded (not audio, truncated, empty)."""

"""Errors that carry a one-line message meant for the user."""


class DataError(Exception):
    """Bad data or options: the message is shown to the user as one line."""


class AudioDecodeError(DataError):
    """An audio file that cannot be decoded (not audio, truncated, empty)."""


class AudioTooLongError(AudioDecodeError):
    """An audio file longer than the caller's ``max_seconds`` (refused before decoding)."""


class FeatureError(AudioDecodeError):
    """Audio that decodes but gives unusable features (non-finite or constant)."""

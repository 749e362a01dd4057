"""Errors that the CLI turns into one clear line and a non-zero exit."""


class WandappError(Exception):
    """A user-facing error: bad input, missing data, unreadable model."""


class UnsupportedModelError(WandappError):
    """The model's structure is not one the adapter knows how to walk."""


class DataError(WandappError):
    """A data file or dataset could not be found or read."""

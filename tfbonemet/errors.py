"""Errors the CLI reports as one line: each names the file or value at fault and the problem."""


class TfbonemetError(Exception):
    """Base for user-facing errors."""


class ConfigError(TfbonemetError):
    """A configuration, preset or option value is not valid."""


class DataError(TfbonemetError):
    """An input file or dataset cannot be used; the message names the file and why."""


class ModelError(TfbonemetError):
    """A model file or weight file is missing or does not match."""

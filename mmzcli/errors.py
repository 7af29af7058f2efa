"""One family of exceptions and warnings for everything a user can get wrong.

The CLI turns an ``MmzError`` into one red line and exit code 2; anything else
is a bug and keeps its traceback.
"""


class MmzError(Exception):
    """A user-facing failure: the message says what, where, and what to do."""


class ConfigError(MmzError, ValueError):
    """A survey profile or project configuration is malformed."""


class InputError(MmzError, ValueError):
    """An input file (tile, catalogue, store) is missing, unreadable or inconsistent."""


class MmzWarning(UserWarning):
    """Base class of mmz warnings, so that users can filter them in one go."""

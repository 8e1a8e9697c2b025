"""The one exception family users see: messages name the file, the key and the fix."""


class CrossbarEPError(Exception):
    """An error the user can cause and fix (bad YAML, missing data, bad physics).

    The CLI prints the message without a traceback and exits with status 2.
    """


class ConfigError(CrossbarEPError):
    """An experiment file (or a ``--set`` override) is invalid."""


class DataError(CrossbarEPError):
    """A data set is missing, corrupt or unreadable."""


class CheckpointError(CrossbarEPError):
    """A run directory or checkpoint cannot be resumed."""

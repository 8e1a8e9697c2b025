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


class interrupts:
    """Context manager: a Ctrl-C that lands while a compiled (Numba) kernel returns reaches
    Python as ``SystemError(... returned a result with an exception set)`` caused by the
    KeyboardInterrupt; inside this block it is raised as the KeyboardInterrupt it is, so the
    CLI's interrupt handling (checkpoint intact, resume command) applies."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, SystemError) and (isinstance(exc.__cause__, KeyboardInterrupt) or
                                             isinstance(exc.__context__, KeyboardInterrupt)):
            raise KeyboardInterrupt() from None
        return False

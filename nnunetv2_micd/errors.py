"""The project's expected failures: what a user can fix, said in one line by the ``micd`` command.

Every error that bad input, configuration or environment can cause derives from :class:`MicdError`; anything else
is a bug and keeps its traceback. The subclasses also derive from the built-in error that describes them, so
callers of the Python API can keep catching ``ValueError`` or ``FileNotFoundError``.
"""


class MicdError(Exception):
    """A failure the user can fix; its message says what is wrong and names the case, file or setting."""


class DataError(MicdError, ValueError):
    """An image, label or dataset that is missing, malformed or inconsistent."""


class MissingInputError(MicdError, FileNotFoundError):
    """A file or folder that must exist first (often made by an earlier command, which the message names)."""


class ExistingOutputError(MicdError, FileExistsError):
    """An output that exists and would be replaced without being asked to."""


class UsageError(MicdError, ValueError):
    """An argument or option value that cannot be used."""

"""User-facing errors: each prints as one line and maps to an exit code; and the one warning
class, for what a user should know that does not stop the work."""


class KnightError(Exception):
    """An error the user can cause and fix; printed without a traceback."""

    exit_code = 1


class UsageError(KnightError):
    """Bad command-line input (unknown option value, missing file)."""

    exit_code = 2


class NotFoundError(KnightError):
    """A named thing (problem, run, iteration, database) does not exist."""

    exit_code = 1


class KnightWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one
    `warning:` line)."""

"""The project's exception types.

Library code raises these; only the CLI turns them into a one-line message and an
exit code (2 for bad params or usage, 1 for a runtime failure).
"""


class SparsecliError(Exception):
    """Base class: a failure the user can fix, reported as one line."""

    exit_code = 1


class ParamsError(SparsecliError):
    """A params file or override is wrong: unknown key, wrong type, out of range."""

    exit_code = 2


class InputFileError(SparsecliError):
    """An input file is missing, truncated or malformed."""

    exit_code = 1


class CheckpointError(InputFileError):
    """A checkpoint is missing, corrupted or built for another architecture."""


class OutputPathError(SparsecliError):
    """An output cannot be written where it goes (a file in the way, no permission): found before any work."""

    exit_code = 1


class LockedError(SparsecliError):
    """Another run of the same stage is writing the same outputs."""

    exit_code = 1

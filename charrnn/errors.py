"""The one exception type the CLI turns into a one-line error and exit code 2."""


class CharrnnError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, a nonsense option value."""

    exit_code = 2


class DistributedError(CharrnnError):
    """A training process lost its peers (one failed, was killed, or timed out): one line, exit code 1."""

    exit_code = 1

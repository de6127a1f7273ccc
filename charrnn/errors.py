"""The one exception type the CLI turns into a one-line error and exit code 2."""


class CharrnnError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, a nonsense option value."""

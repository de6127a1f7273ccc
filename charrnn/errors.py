"""The exceptions the CLI turns into one line on stderr, each with its own exit code, and the helper
that keeps that line short. Exit codes: 2 bad input (or a file that cannot be read or written),
1 a lost peer under torchrun, 3 a run that diverged, 130 interrupted."""


class CharrnnError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, a nonsense option value."""

    exit_code = 2


class BadValue(CharrnnError, ValueError):
    """A value of the right type that makes no sense (a negative length, an unknown policy): what the
    Python API raises where the CLI prints the same line."""


class BadType(CharrnnError, TypeError):
    """A value of the wrong type given to the Python API (a float top_k, a bool length)."""


class DistributedError(CharrnnError):
    """A training process lost its peers (one failed, was killed, or timed out): one line, exit code 1."""

    exit_code = 1


class TrainingDiverged(CharrnnError):
    """Training produced non-finite losses, gradients or weights and stopped: one line, exit code 3.
    No checkpoint is written from that point on; the last one on disk holds finite weights."""

    exit_code = 3


class Interrupted(CharrnnError):
    """Stopped by Ctrl-C (or SIGTERM) after saving what it had: one line, exit code 130."""

    exit_code = 130


def one_line(text: object, width: int = 160) -> str:
    """The first line of `text`, at most `width` characters: cut at the last space before that (or
    inside a very long word), with "..." to show something was cut."""
    lines = str(text).strip().splitlines()
    line = " ".join(lines[0].split()) if lines else ""
    if len(line) <= width:
        return line
    cut = line.rfind(" ", 0, width - 3)
    return (line[:cut] if cut > width // 2 else line[:width - 3]).rstrip(" ,;:") + "..."


def printable(text: str) -> str:
    """`text` with every character that is not printable as a backslash escape (a newline as \\n, a
    terminal's escape character as \\x1b, a byte that is not UTF-8, which Python carries as a lone
    surrogate, as \\xff): what reaches a terminal can neither start a second line nor drive it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # a byte that is not UTF-8, as os.fsdecode and sys.argv carry it
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")

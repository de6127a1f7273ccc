"""The exceptions the CLI turns into one line on stderr, each with its own exit code, and the helper
that keeps that line short. Exit codes: 2 bad input (or a file that cannot be read or written),
1 a lost peer under torchrun, 3 a run that diverged, 130 interrupted."""


class CharrnnError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, a nonsense option value."""

    exit_code = 2


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

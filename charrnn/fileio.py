"""Reading and writing files the way every part of charrnn does: only regular files are read (a FIFO
or a device would block or never end), every write goes to a temporary file that is renamed into
place, and any failure of the filesystem (no space, no permission) becomes one line that names the
file and the cause. Nothing here imports torch or numpy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import CharrnnError, one_line

TMP_SUFFIX = ".tmp"  # temporary files are named .<name>.<random>.tmp beside their target


def shown(path: str | Path) -> str:
    """A path as text that can always be printed and written to JSON: bytes that are not UTF-8
    (a file name holding 0xff, say) appear as \\xff escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind an exception: itself, or what it was raised from or during (torch.save
    reports a failed write as a RuntimeError raised while handling the OSError)."""
    seen = set()
    while e is not None and id(e) not in seen and not isinstance(e, CharrnnError):
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


def reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, "") or one_line(e) or type(e).__name__


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """Open a regular file for reading in binary mode, or fail with one line.

    Opened without blocking and checked on the open descriptor, so a FIFO, /dev/zero or a socket is
    refused at once (and a file swapped for one after a check cannot slip through)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CharrnnError(f"no such {what}: {shown(path)}") from None
    except IsADirectoryError:
        raise CharrnnError(f"{shown(path)} is a directory, not a {what}") from None
    except OSError as e:
        raise CharrnnError(f"cannot read {shown(path)}: {reason(e)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CharrnnError(f"{shown(path)} is a directory, not a {what}")
        if not stat.S_ISREG(mode):
            raise CharrnnError(f"{shown(path)} is not a regular file (a FIFO, device or socket), so it cannot be a {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    with open_regular(path, what) as f:
        try:
            return f.read()
        except OSError as e:
            raise CharrnnError(f"cannot read {shown(path)}: {reason(e)}") from None


def is_regular(path: Path) -> bool:
    """Whether `path` exists as a regular file (following links); nothing else counts as one of our files."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file beside it, flushed to disk and renamed
    over `path` when the block ends without error. A crash, Ctrl-C or a full disk mid-write leaves
    the old file as it was, never a torn one, and any failure is one line naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a run folder is ordinary files
        os.replace(tmp, path)
        tmp = None
    except Exception as e:
        err = os_error_in(e)
        if err is None:
            raise
        raise CharrnnError(f"cannot write {shown(path)}: {reason(err)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it over `path` (see atomic_file)."""
    with atomic_file(path) as f:
        write(f)


def append_line(path: Path, line: str) -> None:
    """Append one line of text; a failure is one line naming the file."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:
        raise CharrnnError(f"cannot write {shown(path)}: {reason(e)}") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (the caller holds its lock)."""
    removed = []
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed

"""Reading and writing files the way every part of charrnn does: only regular files are read (a FIFO
or a device would block or never end), every write goes to a temporary file that is renamed into
place, a file appended to is never reached through a symbolic link, and any failure of the
filesystem (no space, no permission) becomes one line that names the file and the cause. Paths in
messages are shown escaped (`shown`). Nothing here imports torch or numpy.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import CharrnnError, one_line, printable

# A temporary file is named .<target>.<random>.tmp beside its target: `remove_stale_temporaries` knows
# one of ours by that shape and its target's name, so a user's own .draft.tmp is never taken for one.
TMP_SUFFIX = ".tmp"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def shown(path: str | Path | bytes) -> str:
    """A path as every message shows it: as it is when each of its characters is printable, else in
    quotes with the others as backslash escapes (`'/tmp/no\\nsuch.txt'`, `'caf\\xff.txt'`), so a crafted
    file name can neither forge a line of output nor send a terminal its escape codes."""
    text = os.fsdecode(path)
    if text.isprintable():
        return text
    return "'" + printable(text.replace("\\", "\\\\").replace("'", "\\'")) + "'"


def path_text(path: str | Path | bytes) -> str:
    """A path as text that can always be written to JSON or a page: bytes that are not UTF-8 (a file
    name holding 0xff, say) appear as \\xff escapes; the writer escapes everything else its own way."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def expand_user(text: str) -> Path:
    """`~/x` -> the home folder's x; left as it is where there is no home folder (HOME unset and no
    passwd entry, as in a container run with --user), where Path.expanduser raises."""
    return Path(os.path.expanduser(text))


def json_value(data: bytes) -> Any:
    """JSON from a file's bytes; ValueError for anything else: bytes that are not UTF-8, broken syntax, or
    nesting so deep (`[[[[...`) that the parser would overflow the stack."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(json_safe(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((to_json(obj, indent=2) + "\n").encode("utf-8")))


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
        fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC)
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


def refuse_link(path: Path) -> None:
    """One line if `path` is a symbolic link: a run folder's own files are never reached through one (a
    link planted in a shared folder would make a run write over a file somewhere else)."""
    if path.is_symlink():
        raise CharrnnError(f"{shown(path)} is a symbolic link: charrnn never writes through a link in a run "
                           f"folder (remove it)")


def open_in_folder(path: Path, flags: int, what: str = "file") -> int:
    """A descriptor for a file charrnn writes in place (appends to, locks), opened without following a
    link (O_NOFOLLOW) or blocking on a FIFO, and checked to be a regular file; else one line."""
    try:
        fd = os.open(path, flags | NOFOLLOW | CLOEXEC | NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            refuse_link(path)
        if e.errno == errno.ENXIO:  # a FIFO with no reader
            raise CharrnnError(f"{shown(path)} is not a regular file (a FIFO, device or socket), so it cannot be "
                               f"a {what}") from None
        raise CharrnnError(f"cannot write {shown(path)}: {reason(e)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CharrnnError(f"{shown(path)} is not a regular file (a FIFO, device or socket), so it cannot be a {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def append_line(path: Path, line: str) -> None:
    """Append one line of text; a link at `path` or a failure is one line naming the file."""
    fd = open_in_folder(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:
        raise CharrnnError(f"cannot write {shown(path)}: {reason(e)}") from None


def remove_stale_temporaries(folder: Path, targets: str) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (the caller holds its lock): only
    regular files named as `atomic_file` names them for a target whose name matches the regular
    expression `targets`. Anything else (a user's own .draft.tmp) stays."""
    ours = re.compile(rf"\.(?:{targets})\.[a-z0-9_]+{re.escape(TMP_SUFFIX)}")
    removed = []
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if ours.fullmatch(p.name) and stat.S_ISREG(p.lstat().st_mode):
                p.unlink()
                removed.append(p)
    return removed

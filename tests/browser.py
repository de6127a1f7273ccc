"""Headless Chromium for tests: open a local HTML page, return its DOM after its scripts ran and its JavaScript errors.

A helper module (``from browser import render, require_chromium``), not a test file. It needs only a Chromium binary:
Debian's ``chromium`` package, which ``.ci/run`` installs; without one, ``require_chromium()`` skips the test.

What this Chromium (Debian's 156, new headless mode) prints on stderr with ``--enable-logging=stderr --v=0``, one
entry per console message, every one at INFO level whatever the console method (log, warn and error look alike):

    [pid:tid:MMDD/HHMMSS.us:INFO:CONSOLE:3] "Uncaught Error: boom", source: file:///tmp/page.html (3)

Uncaught exceptions, syntax errors and unhandled promise rejections start with "Uncaught"; those (and any entry
logged at ERROR level, as some other Chromium builds do for console.error) are ``console_errors``. A plain
``console.error(...)`` call cannot be told apart from ``console.log(...)`` here: it is in ``console`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SKIP_REASON = "Chromium is not installed: .ci/run installs Debian's chromium; apt-get install -y chromium"

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm, too small for Chromium
    "--dump-dom",  # print the DOM as serialized after the page loaded and its scripts ran
    "--virtual-time-budget=5000",  # wait for (fast-forwarded) timers and promises up to 5 s of virtual time
    "--run-all-compositor-stages-before-draw",
    "--enable-logging=stderr", "--v=0",  # console messages and uncaught errors go to stderr
)

# One console entry; its message may span lines. Older builds write CONSOLE(3) instead of CONSOLE:3.
_CONSOLE = re.compile(r'^\[(?:[^\]\n]*:)?([A-Z]+):CONSOLE(?::\d+|\(\d+\))\] "(.*?)", source: (\S*) \((\d+)\)$',
                      re.MULTILINE | re.DOTALL)


@dataclass
class Rendered:
    dom: str  # the serialized DOM after scripts ran (what --dump-dom prints)
    console_errors: list[str]  # "Uncaught Error: boom (file:///.../page.html:3)", one per error
    stderr: str  # everything Chromium wrote on stderr (much of it harmless D-Bus noise)
    console: list[str] = field(default_factory=list)  # every console message, errors included, same format


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """At the top of a test: skip it, with the reason, when there is no Chromium; under CI (CI=true), where
    .ci/run installs it, fail instead: a browser test that skipped there would pass unseen. Returns the
    binary's path."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    return path


def parse_console(stderr: str) -> tuple[list[str], list[str]]:
    """(every console message, the errors among them) from Chromium's stderr."""
    messages, errors = [], []
    for level, message, source, line in _CONSOLE.findall(stderr):
        entry = f"{message} ({source}:{line})"
        messages.append(entry)
        if message.startswith("Uncaught") or level in ("ERROR", "FATAL"):
            errors.append(entry)
    return messages, errors


def render(path: Path, timeout: float = 60, fragment: str = "", flags: tuple[str, ...] = ()) -> Rendered:
    """Open the local HTML file ``path`` (with ``#fragment`` when given) in headless Chromium, with ``flags``
    besides its own (``--window-size=1000,800``, say); its DOM after scripts ran and its JavaScript errors.

    Raises RuntimeError when there is no Chromium, when it runs past ``timeout`` seconds (its whole process group is
    killed), exits with an error, or prints no DOM.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no HTML file to render: {path}")
    exe = find_chromium()
    if exe is None:
        raise RuntimeError(SKIP_REASON)
    with tempfile.TemporaryDirectory(prefix="charrnn-chromium-", ignore_cleanup_errors=True) as profile:
        cmd = [exe, *FLAGS, *flags, f"--user-data-dir={profile}", path.as_uri() + (f"#{fragment}" if fragment else "")]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # its own process group, to kill all of it
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            raise RuntimeError(f"Chromium did not finish rendering {path} within {timeout:g} s; killed it.\n"
                               f"stderr (last lines):\n{_tail(err)}") from None
        finally:
            _kill_group(proc.pid)  # helpers (crashpad, zygotes) that outlived the browser
    stderr = err.decode("utf-8", errors="replace")
    dom = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"Chromium failed rendering {path} (exit status {proc.returncode}).\n"
                           f"stderr (last lines):\n{_tail(err)}")
    if not dom.strip():
        raise RuntimeError(f"Chromium printed no DOM for {path}.\nstderr (last lines):\n{_tail(err)}")
    console, errors = parse_console(stderr)
    return Rendered(dom=dom, console_errors=errors, stderr=stderr, console=console)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(err: bytes, lines: int = 20) -> str:
    return "\n".join(err.decode("utf-8", errors="replace").splitlines()[-lines:])

"""The quantities users type: durations ('90s', '1h30m') and counts ('800k', '3M'), parsed and bounded;
durations written back the same way.
Nothing here imports torch or numpy, so the CLI can parse options before loading them."""

from __future__ import annotations

import math
import re

from .errors import CharrnnError, one_line

MAX_SECONDS = 366 * 24 * 3600.0  # a year: longer is a typo, and would overflow timers further down
MAX_COUNT = 10**12  # parameters: a trillion is already far beyond any machine this trains on
MAX_SEED = 2**63 - 1  # torch and numpy both take seeds in [0, MAX_SEED]

_PART = r"(\d+(?:\.\d+)?)\s*(h|m|s)"


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m', '2.5m' or plain seconds -> seconds, in (0, a year]."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(_PART, t)
        if not parts or re.sub(_PART, "", t).strip():
            raise CharrnnError(f"not a duration: {text!r} (use e.g. 90s, 10m, 1h30m)")
        seconds = sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)
    return check_duration(seconds, text)


def format_duration(seconds: float) -> str:
    """Seconds as parse_duration reads them, to the second under an hour: '45s', '5m00s', '1h02m'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def check_duration(seconds: float, text: object = None) -> float:
    shown = text if text is not None else seconds
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise CharrnnError(f"duration {one_line(repr(shown), 40)} is out of range: at most {MAX_SECONDS / 86400:.0f} days")
    if seconds <= 0:
        raise CharrnnError(f"a duration must be > 0, not {one_line(repr(shown), 40)}")
    return float(seconds)


def parse_count(text: str) -> int:
    """'3M', '800k', '1.5m', '250000' -> a count, at least 1 and at most MAX_COUNT."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise CharrnnError(f"not a parameter count: {text!r} (use e.g. 800k, 3M)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    if not value <= MAX_COUNT:  # also catches inf from a few hundred digits
        raise CharrnnError(f"parameter count {one_line(repr(text.strip()), 40)} is out of range: at most {MAX_COUNT:.0e}")
    return int(value)

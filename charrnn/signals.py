"""Stopping on a signal, beside the distributed code it must agree with: the first Ctrl-C asks the
training loop to finish its step and save; a second one stops at once. SIGTERM (what schedulers send
before they kill, and what torchrun forwards when it is stopped) does the same, and so, without
torchrun (whose agent turns it into a SIGTERM), does SIGHUP: a closing terminal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from .distributed import World

INTERRUPTED = "interrupted: finishing this step and saving last.pt (Ctrl-C again to abort)"


@contextlib.contextmanager
def stop_on_signals(world: World, request_stop: Callable[[], bool], say: Callable[[str], None]) -> Iterator[None]:
    """While inside, a stop signal calls `request_stop()`, which returns whether a stop had already been
    asked for (then the signal aborts: KeyboardInterrupt). `say` tells the user, on the main rank. Outside
    the main thread (a library user's worker) signals cannot be caught, and nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if request_stop():
            raise KeyboardInterrupt
        if world.is_main:
            say(INTERRUPTED)

    signals = (signal.SIGINT, signal.SIGTERM)
    if not world.launched and hasattr(signal, "SIGHUP"):
        signals += (signal.SIGHUP,)
    if world.stop_asked:  # torchrun's SIGTERM came while this rank was setting up
        request_stop()
    previous = {s: signal.signal(s, handler) for s in signals}
    failed = True
    try:
        yield
        failed = False
    finally:
        for s, old in previous.items():
            if failed and s == signal.SIGTERM and world.launched:
                # A rank that fails is leaving with its own message. torchrun sends SIGTERM to every
                # rank once it sees one die, often just now: the default action would cut that short.
                old = signal.SIG_IGN
            signal.signal(s, old)

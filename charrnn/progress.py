"""The progress a person sees: a bar on a terminal, a plain line per update elsewhere (a log file does not
want a bar's redraws). Training's is a trainer hook, as any other; compare's measuring phase moves one
with `show`."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class ProgressBar:
    """A bar from 0 to 1 with a line of text (`show`); off a terminal, every `every`-th update is a line of
    its own, led by `label`. Hooks a Trainer calls: `on_log` (each metrics record) and `on_stop`."""

    def __init__(self, enabled: bool = True, stream=None, every: int = 10, label: str = ""):
        self.stream = stream or sys.stderr
        self.terminal = enabled and self.stream.isatty()
        self.enabled, self.every, self.label, self.updates = enabled, every, label, 0
        self.bar = tqdm(total=1000, file=self.stream, dynamic_ncols=True, leave=True, desc=label or None,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}") if self.terminal else None

    def show(self, fraction: float, text: str) -> None:
        """The bar at `fraction` (0 to 1) of the work, with `text` beside it."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = int(min(max(fraction, 0.0), 1.0) * 1000)
            self.bar.set_postfix_str(text, refresh=True)
            return
        self.updates += 1
        if self.updates % self.every == 0:
            lead = f"{self.label} " if self.label else ""
            print(f"{lead}{100 * fraction:.0f}% {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @staticmethod
    def line(trainer, record: dict) -> str:
        loss = "-" if record["loss"] is None else f"{record['loss']:.3f}"
        skipped = trainer.progress.skipped
        return (f"step {record['step']} loss {loss} {record['chars_per_s'] / 1000:.1f}k chars/s"
                + (f" skipped {skipped}" if skipped else ""))

    def on_log(self, trainer, record: dict) -> None:
        if self.enabled:
            self.show(trainer.fraction_done(), self.line(trainer, record))

    def on_stop(self, trainer, reason: str) -> None:
        self.close()

    @staticmethod
    def say(message: str) -> None:
        """A notice on stderr that does not break a bar (tqdm.write moves it above the bar)."""
        tqdm.write(message, file=sys.stderr)

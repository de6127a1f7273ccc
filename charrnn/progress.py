"""The training progress a person sees: a bar on a terminal, a plain line per record elsewhere (a log
file does not want a bar's redraws). A trainer hook, as any other."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class ProgressBar:
    """Hooks a Trainer calls: `on_log` (each metrics record) and `on_stop`. `every` records per plain line."""

    def __init__(self, enabled: bool = True, stream=None, every: int = 10):
        self.stream = stream or sys.stderr
        self.terminal = enabled and self.stream.isatty()
        self.enabled, self.every, self.records = enabled, every, 0
        self.bar = tqdm(total=1000, file=self.stream, dynamic_ncols=True, leave=True,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}") if self.terminal else None

    @staticmethod
    def line(trainer, record: dict) -> str:
        loss = "-" if record["loss"] is None else f"{record['loss']:.3f}"
        skipped = trainer.progress.skipped
        return (f"step {record['step']} loss {loss} {record['chars_per_s'] / 1000:.1f}k chars/s"
                + (f" skipped {skipped}" if skipped else ""))

    def on_log(self, trainer, record: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = int(trainer.fraction_done() * 1000)
            self.bar.set_postfix_str(self.line(trainer, record), refresh=True)
            return
        self.records += 1
        if self.records % self.every == 0:
            print(f"{100 * trainer.fraction_done():.0f}% {self.line(trainer, record)}", file=self.stream, flush=True)

    def on_stop(self, trainer, reason: str) -> None:
        if self.bar is not None:
            self.bar.close()

    @staticmethod
    def say(message: str) -> None:
        """A notice on stderr that does not break a bar (tqdm.write moves it above the bar)."""
        tqdm.write(message, file=sys.stderr)

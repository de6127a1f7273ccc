"""Settings chosen from the time budget and the corpus: what to train when the user only says how long.

The same ten minutes buy six times more training on one machine than on another, and a 2-layer
model costs relatively more on some CPUs than on others, so seconds alone cannot pick the model.
What decides is how many characters a model can train on in the budget, and how many times over
that reads the corpus. So before a new run whose settings are not all given, we time a few training
steps of each candidate preset on the run's own device and precision, largest first, and take the
largest preset that can train on at least its `min_chars` characters in the budget without reading
the training split more than its `max_epochs` times; its dropout, and an RNN's weight drop, then
follow the epochs those characters make of the training split (`dropout_for`, `weight_drop_for`;
where that brings either, which can slow a step, the preset is timed again with them, and the epochs
counted again).
The presets, thresholds and these rules come from sweeps recorded in benchmarks/README.md. Whatever the user
sets wins, and is part of what is timed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from .config import ModelConfig
from .device import autocast, fused_adamw
from .families import Family, Preset, build_model, family_of, model_config, model_settings


def shape_keys(fam: Family) -> tuple[str, ...]:
    """What the speed of a step of this family's models depends on."""
    return ("model", "n_layers", "hidden", *(o.name for o in fam.options if o.speed), "batch_size", "seq_len")


def presets_for(kind: str) -> tuple[Preset, ...]:
    """The presets of a kind of model: its family's, with `model` set to this kind (the LSTM's serve
    lstm, gru and rnn alike)."""
    return tuple(replace(p, settings={**p.settings, "model": kind}) for p in family_of(kind).presets)


def needs_choice(given: dict[str, Any]) -> bool:
    """Whether some setting a preset would fill is left unset."""
    kind = given.get("model", ModelConfig.model)
    keys = {k for p in presets_for(kind) for k in p.settings} - {"model"}
    return not keys <= given.keys()


# Dropout follows the epochs the budget buys on this corpus (characters trained / training characters):
# a model that reads its text once or twice cannot overfit it, one that reads it many times must be held
# back. None up to 6 epochs, then 0.25 more per doubling, at most 0.5, in steps of 0.05 (no cliff where
# a timing's noise could tip it). The sweeps behind each number: benchmarks/README.md, "How the presets
# were chosen".
def dropout_for(epochs: float) -> float:
    return _down_to_step(min(0.5, max(0.0, 0.25 * math.log2(max(epochs, 1e-9) / 6))))


def _down_to_step(p: float) -> float:
    """p rounded down to a multiple of 0.05."""
    return round(math.floor(p / 0.05 + 1e-9) * 0.05, 2)


# DropConnect on the recurrent matrices (the families that read `weight_drop`) follows the same epochs,
# at half the dropout, and the dropout beside it stops at 0.3: the pair that scored lowest past 30 epochs
# (benchmarks/README.md, "Past 30 epochs").
MAX_DROPOUT_WITH_WEIGHT_DROP = 0.3


def weight_drop_for(epochs: float) -> float:
    return _down_to_step(dropout_for(epochs) / 2)


@dataclass
class Choice:
    """The preset picked for a budget, and the measurement behind it (recorded in config.json)."""

    name: str
    settings: dict[str, Any]  # the preset's settings with the user's own on top
    budget_s: float
    chars_per_s: float  # measured training speed of exactly these settings here
    train_chars: int | None = None  # the training split's length, when known

    @property
    def chars(self) -> float:
        return self.chars_per_s * self.budget_s

    @property
    def epochs(self) -> float | None:
        return self.chars / self.train_chars if self.train_chars else None

    def describe(self) -> str:
        s = self.settings
        fam = family_of(s["model"])
        shape = fam.describe({**s, "dropout": 0})  # the dropout is said next, even when it is none
        length = fam.derived(dict(s)).get("seq_len", s.get("seq_len"))
        return (f"preset {self.name} for {self.budget_s:g}s: {s['model']} {shape}, "
                f"dropout {s['dropout']}, batch {s['batch_size']}x{length}, lr {s['lr']:g} "
                f"(measured {self.chars_per_s / 1000:.1f}k chars/s here, ~{self.chars / 1e6:.1f}M chars in the budget"
                + (f", {self.epochs:.1f} epochs)" if self.epochs is not None else ")"))

    def to_dict(self) -> dict[str, Any]:
        out = {"preset": self.name, "budget_s": self.budget_s, "chars_per_s": round(self.chars_per_s),
               "chars": round(self.chars)}
        if self.epochs is not None:
            out["epochs"] = round(self.epochs, 2)
        return out


def measure_speed(settings: dict[str, Any], vocab_size: int, device: torch.device, precision: str,
                  seconds: float = 0.3) -> float:
    """Training chars/s of a model and batch size here: one warm-up step, then `seconds` of steps.

    Random weights and data: the speed of a step does not depend on what it learns. The batch is the
    run's own shape: each step's fixed costs (the optimizer, the output layer's launch) weigh on a
    short chunk, so a shorter one would read slower than training runs. The global RNG is left as it
    was, so the run's own seeding is unaffected.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        config = model_config(vocab_size, **model_settings(settings)[0])
        model = build_model(config).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused_adamw(device))  # the trainer's own
        x = torch.randint(0, config.outputs, (settings["batch_size"], settings["seq_len"] + 1), device=device)
        state, steps, t0 = None, 0, 0.0
        while True:
            if steps == 1:  # the first step pays for allocation and kernel selection
                _sync(device)
                t0 = time.perf_counter()
            with autocast(device, precision):
                _, loss, state = model(x[:, :-1], state, x[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            state = None if state is None else tuple(s.detach() for s in state)
            steps += 1
            if steps >= 3:
                _sync(device)
                if time.perf_counter() - t0 >= seconds:
                    break
    return (steps - 1) * x[:, :-1].numel() / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def regularisation(kind: str, epochs: float, given: dict[str, Any]) -> dict[str, float]:
    """The dropout, and the weight drop where the family has one, that `epochs` call for: those of the
    two the user has not set (`given`). Beside weight drop the dropout is at most 0.3."""
    held: dict[str, float] = {}
    weight_drop = 0.0
    if any(o.name == "weight_drop" for o in family_of(kind).options):
        weight_drop = given.get("weight_drop", weight_drop_for(epochs))
        if "weight_drop" not in given:
            held["weight_drop"] = weight_drop
    if "dropout" not in given:
        p = dropout_for(epochs)
        held["dropout"] = min(p, MAX_DROPOUT_WITH_WEIGHT_DROP) if weight_drop else p
    return held


def choose(budget_s: float, given: dict[str, Any], vocab_size: int, device: torch.device, precision: str,
           train_chars: int | None = None, measure: Callable[..., float] | None = None) -> Choice:
    """The largest preset that can train on its `min_chars` in the budget within its `max_epochs` of
    `train_chars`, with the user's settings on top; its dropout (and weight drop, where the family has
    one, with the dropout then at most 0.3) from the epochs that makes of `train_chars` (`dropout_for`,
    `weight_drop_for`) unless the user set them. `measure`: the training speed of settings, as
    `measure_speed` times it (compare's plan predicts the choice with a speed it estimates)."""
    measure = measure or measure_speed  # looked up here, so that a test's stand-in for it is the one used
    speeds: dict[tuple, float] = {}  # presets the user's settings make identical in shape are timed once
    for preset in reversed(presets_for(given.get("model", ModelConfig.model))):  # largest first
        settings = family_of(preset.settings["model"]).derived({**preset.settings, **given})
        shape = tuple(settings.get(k) for k in shape_keys(family_of(settings["model"])))
        if shape not in speeds:
            try:
                speeds[shape] = measure(settings, vocab_size, device, precision)
            except ValueError:  # the user's settings do not fit this preset (heads that do not divide hidden)
                speeds[shape] = math.nan  # never chosen: NaN fails every comparison
        chars = speeds[shape] * budget_s
        if chars >= preset.min_chars and not (train_chars and chars / train_chars > preset.max_epochs):
            choice = Choice(preset.name, {k: settings[k] for k in preset.settings}, budget_s, speeds[shape],
                            train_chars)
            if choice.epochs is not None:
                held = regularisation(settings["model"], choice.epochs, given)
                if any(held.values()):
                    # Dropout and weight drop can slow a step (their masks come from a pool, but the
                    # masked matrices are copies, and nn.LSTM draws its own between layers), and what the
                    # rule reads is the epochs the run will train: time the preset again as it will train,
                    # and hold it back as those epochs say.
                    choice.chars_per_s = measure({**settings, **held}, vocab_size, device, precision)
                    held = regularisation(settings["model"], choice.epochs, given)
                choice.settings.update(held)
            return choice
    # No preset fits the user's settings: the smallest (the loop's last) with them on top, which the run's
    # own checks then refuse in one line.
    return Choice(preset.name, {k: settings[k] for k in preset.settings}, budget_s, math.nan)

"""Settings chosen from the time budget: what to train when the user only says how long.

The same ten minutes buy six times more training on one machine than on another, and a 2-layer
model costs relatively more on some CPUs than on others, so seconds alone cannot pick the model.
What decides is how many characters a model can train on in the budget. So before a new run whose
settings are not all given, we time a few training steps of each candidate preset on the run's own
device and precision, largest first, and take the largest preset that can train on at least its
`min_chars` characters in the budget. The presets and thresholds were measured on tinyshakespeare
(benchmarks/README.md). Whatever the user sets wins, and is part of what is timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .device import autocast

MODEL_KEYS = ("model", "n_layers", "hidden", "embed")


@dataclass(frozen=True)
class Preset:
    name: str
    min_chars: float  # characters this preset must be able to train on in the budget to be chosen
    settings: dict[str, Any]


# Smallest first. A small model learns fastest per character at first; a bigger one, regularised,
# wins once it can see the text several times over.
PRESETS: tuple[Preset, ...] = (
    Preset("small", 0, dict(model="lstm", n_layers=1, hidden=256, embed=64, dropout=0.0, batch_size=16, seq_len=64,
                            lr=2e-2, warmup_steps=30)),
    Preset("medium", 2.5e6, dict(model="lstm", n_layers=1, hidden=384, embed=64, dropout=0.0, batch_size=16,
                                 seq_len=64, lr=8e-3, warmup_steps=30)),
    Preset("large", 4e6, dict(model="lstm", n_layers=1, hidden=512, embed=128, dropout=0.2, batch_size=16, seq_len=64,
                              lr=6e-3, warmup_steps=50)),
    Preset("xlarge", 25e6, dict(model="lstm", n_layers=2, hidden=512, embed=128, dropout=0.3, batch_size=32,
                                seq_len=128, lr=4e-3, warmup_steps=100)),
)
PRESET_KEYS = frozenset(k for p in PRESETS for k in p.settings)


@dataclass
class Choice:
    """The preset picked for a budget, and the measurement behind it (recorded in config.json)."""

    name: str
    settings: dict[str, Any]  # the preset's settings with the user's own on top
    budget_s: float
    chars_per_s: float  # measured training speed of exactly these settings here

    @property
    def chars(self) -> float:
        return self.chars_per_s * self.budget_s

    def describe(self) -> str:
        s = self.settings
        return (f"preset {self.name} for {self.budget_s:g}s: {s['model']} {s['n_layers']}x{s['hidden']}, "
                f"dropout {s['dropout']}, batch {s['batch_size']}x{s['seq_len']}, lr {s['lr']:g} "
                f"(measured {self.chars_per_s / 1000:.1f}k chars/s here, ~{self.chars / 1e6:.1f}M chars in the budget)")

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.name, "budget_s": self.budget_s, "chars_per_s": round(self.chars_per_s),
                "chars": round(self.chars)}


def measure_speed(settings: dict[str, Any], vocab_size: int, device: torch.device, precision: str,
                  seconds: float = 0.3) -> float:
    """Training chars/s of a model and batch size here: one warm-up step, then `seconds` of steps.

    Random weights and data: the speed of a step does not depend on what it learns. Chunks are cut to
    32 characters, which costs the same per character and keeps a big model's timing short. The
    global RNG is left as it was, so the run's own seeding is unaffected.
    """
    from .models import ModelConfig, build_model

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = build_model(ModelConfig(vocab_size=vocab_size, **{k: settings[k] for k in MODEL_KEYS})).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, vocab_size, (settings["batch_size"], min(settings["seq_len"], 32) + 1), device=device)
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


def choose(budget_s: float, given: dict[str, Any], vocab_size: int, device: torch.device, precision: str) -> Choice:
    """The largest preset that can train on its `min_chars` in the budget, with the user's settings on top."""
    speeds: dict[tuple, float] = {}  # presets the user's settings make identical in shape are timed once
    for preset in reversed(PRESETS):
        settings = {**preset.settings, **{k: v for k, v in given.items() if k in PRESET_KEYS}}
        shape = tuple(settings[k] for k in (*MODEL_KEYS, "batch_size", "seq_len"))
        if shape not in speeds:
            speeds[shape] = measure_speed(settings, vocab_size, device, precision)
        if speeds[shape] * budget_s >= preset.min_chars:
            return Choice(preset.name, settings, budget_s, speeds[shape])
    raise AssertionError("the smallest preset has min_chars 0")

"""The classic recurrent family: stacked LSTM, GRU or vanilla RNN (`--model lstm|gru|rnn`), declared:
its options, presets and sizes. The models are in model.py, their sampling step in step.py; this module
imports neither (nor torch), so that `charrnn train --help` lists the options at once.
"""

from __future__ import annotations

from typing import Any

from ...config import ModelConfig
from ..base import Family, Option, PortableStep, Preset, StateSpec, register

RNN_TYPES = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks of H rows in W_ih, W_hh


class RNNFamily(Family):
    name = "rnn"
    summary = "classic RNN: stacked LSTM, GRU or tanh RNN, trained with truncated BPTT"
    kinds = RNN_TYPES
    options = (
        Option("embed", int, 64, "Character embedding size", min=1),
        Option("weight_drop", float, 0.0, "DropConnect on the recurrent weight matrices in training", min=0, max=1,
               max_open=True, speed=False, omit_default=True),
    )
    step_weights = ("fp32", "int8")  # step.py runs on either
    gradient_of = "the recurrent state (every layer's h, and an LSTM's c)"
    token_rows = {"embed.weight": "input", "head.weight": "output", "head.bias": "output"}
    # Smallest first. A small model learns fastest per character at first; a bigger one, regularised,
    # wins once it can see the text several times over. From the sweeps in benchmarks/README.md (the
    # dropout then follows the epochs, presets.dropout_for).
    presets = (
        Preset("small", 0, dict(model="lstm", n_layers=1, hidden=256, embed=64, dropout=0.0, batch_size=16,
                                seq_len=64, lr=2e-2, warmup_steps=30)),
        Preset("medium", 1.5e6, dict(model="lstm", n_layers=1, hidden=384, embed=64, dropout=0.0, batch_size=16,
                                     seq_len=64, lr=8e-3, warmup_steps=30)),
        # Not before 8M characters: below that the smaller model scored lower (benchmarks/README.md).
        Preset("large", 8e6, dict(model="lstm", n_layers=1, hidden=512, embed=128, dropout=0.2, batch_size=16,
                                  seq_len=64, lr=6e-3, warmup_steps=50)),
        # Two layers win where the text is plentiful and lose where it is reread: so at most 3 epochs.
        Preset("xlarge", 25e6, dict(model="lstm", n_layers=2, hidden=512, embed=128, dropout=0.3, batch_size=32,
                                    seq_len=128, lr=4e-3, warmup_steps=100), max_epochs=3),
    )
    presets_note = "LSTM presets from the budget sweeps (benchmarks/README.md); GRU and RNN share them"

    def build(self, config: ModelConfig):
        from .model import CharRNN  # here, not at the top: declaring the family must not import torch

        return CharRNN(config)

    def describe(self, cfg: dict[str, Any]) -> str:
        wd = cfg.get("weight_drop")
        return super().describe(cfg) + (f", weight drop {wd}" if wd else "")

    def param_count(self, c: ModelConfig) -> int:
        V, H, L, G, O = c.vocab_size, c.hidden, c.n_layers, GATES[c.model], c.outputs
        layers = G * H * (c.embed + H) + (L - 1) * G * H * 2 * H + L * 2 * G * H  # W_ih, W_hh, b_ih, b_hh
        return V * c.embed + layers + H * O + O

    def activation_floats(self, c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
        # embeddings, each layer's outputs and gates, the logits and their gradient
        per = c.embed + c.n_layers * c.hidden * (GATES[c.model] + 2) + 3 * c.outputs
        return rows * length * per * (2 if training else 1)

    def sampling_state_floats(self, c: ModelConfig, streams: int) -> int:
        return c.n_layers * streams * c.hidden * (2 if c.model == "lstm" else 1)

    def macs_per_char(self, c: ModelConfig) -> dict[str, float]:
        # the same at every character; the backward pass counted as twice the forward. A sampling step
        # skips layer 0's input product: the sampler folds it into the embedding table (step.py).
        G, H, L = GATES[c.model], c.hidden, c.n_layers
        forward = G * H * (c.embed + H) + (L - 1) * G * H * 2 * H + H * c.outputs
        return {"train": 3.0 * forward, "sample": float(forward - G * H * c.embed)}

    def with_width(self, settings: dict[str, Any], width: int) -> dict[str, Any]:
        return {"hidden": width, "embed": min(settings["embed"], width)}  # no embedding wider than the state

    def portable(self, model) -> PortableStep:
        from .model import PortableCharRNN

        c = model.config
        shape = (c.n_layers, "batch", c.hidden)
        return PortableStep(PortableCharRNN(model).eval(),
                            tuple(StateSpec(n, shape) for n in ("h", "c")[:model.n_state]), web="rnn")


register(RNNFamily())

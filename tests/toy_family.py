"""A plug-in family for the tests: a model no other file knows, registered from outside charrnn.

Its model is a leaky average of character embeddings, h_t = a h_{t-1} + (1 - a) e(x_t), with a learned
per-unit decay a = sigmoid(d), read out by one linear layer: stateful, tiny, and enough to learn
bigram-like text. It declares an option of its own, `--decay-init` (d's initial value), which no file
of charrnn knows, and a portable step, so `charrnn export` takes it (as ONNX and a model folder; it
names no web page step). tests/test_families.py trains, samples, evaluates, compares and exports it
through the CLI.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from charrnn.config import ModelConfig
from charrnn.families import Family, Option, PortableStep, Preset, StateSpec, register
from charrnn.models import Trace, token_losses


class LeakyAverage(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.hidden)
        self.decay = nn.Parameter(torch.full((c.hidden,), float(c.decay_init)))
        self.head = nn.Linear(c.hidden, c.outputs)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size, device="cpu"):
        return (torch.zeros(1, batch_size, self.config.hidden, device=device),)

    def _run(self, idx, h):  # idx (B, T), h (B, H) -> (B, T, H)
        a, e = torch.sigmoid(self.decay), self.embed(idx)
        out = []
        for t in range(idx.size(1)):
            h = a * h + (1 - a) * e[:, t]
            out.append(h)
        return torch.stack(out, 1)

    def forward(self, idx, state=None, targets=None):
        h0 = self.init_state(idx.size(0), idx.device)[0][0] if state is None else state[0][0]
        hs = self._run(idx, h0)
        logits = self.head(hs)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss, (hs[:, -1][None],)

    @torch.no_grad()
    def prefill(self, idx):
        return self.step(idx[:, -1], self(idx[:, :-1])[2] if idx.size(1) > 1 else None)

    @torch.no_grad()
    def step(self, idx, state=None):
        logits, _, state = self(idx[:, None], state)
        return logits[:, 0], state

    @torch.no_grad()
    def iter_trace(self, ids, chunk=1024):
        h = torch.zeros(1, self.config.hidden)
        for s in range(0, len(ids), chunk):
            hs = self._run(ids[None, s:s + chunk], h)[0]  # (T, H)
            h = hs[-1:]
            yield Trace(s, self.head(hs), {"hidden": hs[:, None]}, {})

    def grad_through_time(self, rows, k_max):
        B, W = rows.shape
        with torch.enable_grad():
            h = torch.zeros(B, self.config.hidden)
            taps = []
            for j in range(W - 1):
                h = self._run(rows[:, j:j + 1], h)[:, 0]
                if j >= W - 2 - k_max and j < W - 2:
                    taps.append(torch.zeros_like(h, requires_grad=True))
                    h = h + taps[-1]
            loss = token_losses(self.head(h), rows[:, -1]).sum()
            grads = torch.autograd.grad(loss, taps)
        return torch.stack([g.norm(dim=1) for g in grads], 1).flip(1)


class PortableLeaky(nn.Module):
    """The step in plain tensor operations, for `charrnn export`."""

    def __init__(self, model: LeakyAverage):
        super().__init__()
        self.model = model

    def forward(self, ids, h):  # ids (B,), h (1, B, H) -> logits (B, outputs), the new h
        m = self.model
        a = torch.sigmoid(m.decay)
        h = a * h[0] + (1 - a) * m.embed(ids)
        return m.head(h), h[None]


class LeakyFamily(Family):
    name = "leaky"
    summary = "a leaky average of embeddings (a test plug-in)"
    kinds = ("leaky",)
    options = (Option("decay_init", float, 0.0, "The decay's initial logit: above 0 the average keeps more of the past",
                      min=-10, max=10),)
    presets = (Preset("tiny", 0, dict(model="leaky", n_layers=1, hidden=16, dropout=0.0, batch_size=4, seq_len=16,
                                      lr=3e-2, warmup_steps=0)),)
    presets_note = "one fixed preset"

    def build(self, config):
        return LeakyAverage(config)

    def checks(self, m, t):
        return [(m.n_layers == 1, "a leaky average has one layer")]

    def param_count(self, c):
        return c.vocab_size * c.hidden + c.hidden + c.hidden * c.outputs + c.outputs

    def activation_floats(self, c, rows, length, training=True):
        return rows * length * (3 * c.hidden + 3 * c.outputs) * (2 if training else 1)

    def sampling_state_floats(self, c, streams):
        return streams * c.hidden

    def macs_per_char(self, c):
        return {"train": 3.0 * c.hidden * c.outputs, "sample": float(c.hidden * c.outputs)}

    def portable(self, model):
        return PortableStep(PortableLeaky(model).eval(), (StateSpec("h", (1, "batch", model.config.hidden)),))


register(LeakyFamily())

"""The Transformer baseline (`--model transformer`), declared: its options, presets and sizes. The model,
a decoder-only GPT as nanoGPT builds it, is in model.py; this module does not import it (nor torch), so
that `charrnn train --help` lists the options at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...config import ModelConfig
from ..base import Family, Option, PortableStep, Preset, StateSpec, register


class TransformerFamily(Family):
    name = "transformer"
    summary = "decoder-only Transformer (nanoGPT-style), trained on windows of its context"
    kinds = ("transformer",)
    options = (
        Option("heads", int, 4, "Attention heads; must divide --hidden", min=1),
        Option("context", int, 128, "Characters the Transformer attends to; its training windows are this long",
               min=1),
    )
    refuses = {"seq_len": "its training windows are --context characters"}
    stateful = False
    gradient_of = "the input at that position (token and position embedding), within the context"
    token_rows = {"wte.weight": "input"}  # (the output layer is tied to it)
    # nanoGPT's CPU recipe (4 layers x 128, context 64) for short budgets; the longer context and the wider,
    # deeper model wait for larger ones. The thresholds were set from runs that recorded no row
    # (benchmarks/README.md, "minGRU and minLSTM"): a starting point, not a measured optimum.
    presets = (
        Preset("small", 0, dict(model="transformer", n_layers=4, hidden=128, heads=4, context=64, dropout=0.0,
                                batch_size=16, lr=2e-3, warmup_steps=50, min_lr_ratio=0.1)),
        Preset("medium", 12e6, dict(model="transformer", n_layers=4, hidden=128, heads=4, context=128, dropout=0.0,
                                    batch_size=12, lr=2e-3, warmup_steps=100, min_lr_ratio=0.1)),
        Preset("large", 25e6, dict(model="transformer", n_layers=6, hidden=192, heads=6, context=128, dropout=0.1,
                                   batch_size=12, lr=1.5e-3, warmup_steps=100, min_lr_ratio=0.1)),
    )
    presets_note = "from nanoGPT's CPU recipe; thresholds set by hand, not yet measured (benchmarks/README.md)"

    def build(self, config: ModelConfig):
        from .model import GPT  # here, not at the top: declaring the family must not import torch

        return GPT(config)

    def derived(self, settings: dict[str, Any]) -> dict[str, Any]:
        context = settings.get("context", self.option("context").default)
        return {**settings, "seq_len": context}  # it trains on windows of its context

    def checks(self, m, t):
        return [
            (m.hidden % m.heads == 0, f"heads ({m.heads}) must divide hidden ({m.hidden}), the Transformer's width"),
            (t.seq_len == m.context,
             f"the Transformer trains on windows of --context characters; seq-len {t.seq_len} != context {m.context}"),
        ]

    def context(self, c: ModelConfig) -> int | None:
        return c.context

    def reorder_state(self, model, state, index):
        # the KVCache (model.py): k and v (n_layers, B, heads, context, head_dim), tokens (B, context); one
        # `length` for the whole batch, which reordering keeps
        return replace(state, k=state.k.index_select(1, index), v=state.v.index_select(1, index),
                       tokens=state.tokens.index_select(0, index))

    def param_count(self, c: ModelConfig) -> int:
        # token (tied with the output layer) and position embeddings; per block two LayerNorm weights,
        # qkv 3H^2, proj H^2, MLP 8H^2; the final LayerNorm
        V, H, L = c.vocab_size, c.hidden, c.n_layers
        return V * H + c.context * H + L * (12 * H * H + 2 * H) + H

    def activation_floats(self, c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
        # per block: residual, 2 LayerNorms, q/k/v, attention output, projection, MLP in and out (4H
        # each). The attention matrix is not counted: SDPA's fused kernels never materialise it.
        per = c.n_layers * 16 * c.hidden + 3 * c.outputs
        return rows * length * per * (2 if training else 1)

    def sampling_state_floats(self, c: ModelConfig, streams: int) -> int:
        # the key/value cache over the whole context, and the window's ids
        return 2 * c.n_layers * streams * c.context * c.hidden + 2 * streams * c.context

    def macs_per_char(self, c: ModelConfig) -> dict[str, float]:
        """Training reads windows of `context` characters, each position attending on average to half
        the window (causal); sampling attends to the whole cache and rebuilds the window each time it
        slides (`window_start`), which this counts too."""
        V, H, L = c.outputs, c.hidden, c.n_layers
        C, S = c.context, max(1, c.context // 2)
        dense = 12 * H * H * L  # qkv, projection and MLP per position
        attend = sum(p + 1 for p in range(C)) / C  # position p attends to p + 1 keys
        train = 3.0 * (dense + 2 * H * L * attend + H * V)
        # one cycle of S characters once the window is full: a rebuild over the C - S + 1 characters kept
        # (causal attention among them, the output layer once), then S - 1 cached steps
        n = C - S + 1
        cycle = n * dense + 2 * H * L * n * (n + 1) / 2 + H * V
        cycle += sum(dense + 2 * H * L * keys + H * V for keys in range(n + 1, C + 1))
        return {"train": train, "sample": cycle / S}

    # One `length` per cache: streams at different positions cannot share a step, so `charrnn serve`
    # runs one request at a time (its n choices, which share the prompt, as one batch).
    joins_batches = False

    def join_states(self, states: list):
        raise NotImplementedError("a KVCache holds one length for all its streams")

    def state_rows(self, state, rows):
        return state.rows(rows)

    def describe(self, cfg: dict[str, Any]) -> str:
        return f"{cfg['n_layers']}x{cfg['hidden']}, {cfg['heads']} heads, context {cfg['context']}"

    def width_step(self, settings: dict[str, Any]) -> int:
        return settings["heads"]

    def portable(self, model) -> PortableStep:
        from ...models import window_start
        from .model import PortableGPT

        c = model.config
        cache = (c.n_layers, "batch", c.heads, c.context, c.hidden // c.heads)
        return PortableStep(PortableGPT(model).eval(),
                            (StateSpec("k", cache), StateSpec("v", cache), StateSpec("pos", ("batch",), "int64")),
                            window={"context": c.context, "stride": window_start(c.context + 1, c.context)},
                            web="transformer")


register(TransformerFamily())

"""The Transformer baseline (`--model transformer`): a decoder-only GPT as nanoGPT's model.py builds it.

It is stateless in training: `forward` reads whole windows of at most `context` characters and
returns no state, so its batches are independent random windows and its evaluation strided windows.
For sampling its state is a key/value cache (`KVCache`), so a step costs O(context), not
O(context^2); see `window_start` for how the window slides.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import ModelConfig, PooledDropout, Trace, token_losses, with_input_only_rows
from . import Family, Preset, register


def window_start(t: int, context: int, stride: int | None = None) -> int:
    """Where the window starts that the Transformer reads to predict character t from characters 0..t-1.

    Up to `context` characters it sees everything. Beyond that the window jumps forward by `stride`
    (default context // 2) whenever it is full, rather than by one character: learned absolute
    positions change every key when the window moves, so each move costs a fresh pass over the
    window, and jumping by half a window keeps that at O(context) per character amortised. Every
    prediction therefore sees between context - stride + 1 and context characters. Sampling
    (`GPT.step`) and evaluation (`evaluate_windows`) follow this same rule, so the loss `charrnn
    eval` reports is the loss of the distribution the sampler draws from.
    """
    stride = max(1, context // 2) if stride is None else stride
    if t <= context:
        return 0
    return stride * -(-(t - context) // stride)  # stride * ceil((t - context) / stride)


@dataclass
class KVCache:
    """A Transformer's sampling state: the keys and values of the characters in its window.

    `step` writes into these buffers in place and returns the same object.
    """

    k: torch.Tensor  # (n_layers, B, heads, context, head_dim)
    v: torch.Tensor  # (n_layers, B, heads, context, head_dim)
    tokens: torch.Tensor  # (B, context): the ids in the window, to rebuild it when it slides
    length: int = 0  # positions filled


class CausalSelfAttention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.heads, self.dropout = c.heads, c.dropout
        self.qkv = nn.Linear(c.hidden, 3 * c.hidden, bias=False)
        self.proj = nn.Linear(c.hidden, c.hidden, bias=False)
        self.resid_drop = PooledDropout(c.dropout)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # x: (B, T, d) -> q, k, v: (B, heads, T, d / heads)
        B, T, d = x.shape
        return tuple(t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, 2))

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        # y: (B, heads, T, head_dim) -> (B, T, d)
        B, _, T, _ = y.shape
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, -1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, d) -> (B, T, d), and this window's keys and values (for a cache)."""
        q, k, v = self._split(x)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self._merge(y), k, v

    def step(self, x: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, pos: int) -> torch.Tensor:
        """x: (B, 1, d) at position `pos`; its key and value are written into the buffers at `pos`."""
        q, k, v = self._split(x)
        k_buf[:, :, pos] = k[:, :, 0]
        v_buf[:, :, pos] = v[:, :, 0]
        # one query sees every cached position, so no mask is needed
        y = F.scaled_dot_product_attention(q, k_buf[:, :, : pos + 1], v_buf[:, :, : pos + 1])
        return self._merge(y)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.hidden, bias=False)
        self.attn = CausalSelfAttention(c)
        self.ln2 = nn.LayerNorm(c.hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(c.hidden, 4 * c.hidden, bias=False), nn.GELU(),
                                 nn.Linear(4 * c.hidden, c.hidden, bias=False), PooledDropout(c.dropout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn(self.ln1(x))
        x = x + a
        return x + self.mlp(self.ln2(x)), k, v

    def step(self, x: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, pos: int) -> torch.Tensor:
        x = x + self.attn.step(self.ln1(x), k_buf, v_buf, pos)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only Transformer: token + learned position embeddings, `n_layers` pre-norm blocks of
    causal self-attention (`F.scaled_dot_product_attention`) and a 4x GELU MLP, a final LayerNorm,
    and an output layer tied to the token embedding. No biases, as in nanoGPT's recipe."""


    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        if c.hidden % c.heads:
            raise ValueError(f"heads ({c.heads}) must divide hidden ({c.hidden})")
        self.wte = nn.Embedding(c.outputs, c.hidden)
        self.wpe = nn.Embedding(c.context, c.hidden)
        self.drop = PooledDropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.hidden, bias=False)
        self.head = nn.Linear(c.hidden, c.outputs, bias=False)
        self.head.weight = self.wte.weight  # weight tying: fewer parameters, learns faster
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled down by depth
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
        self.wte = with_input_only_rows(self.wte, c.vocab_size, std=0.02)
        self.head.weight = self.wte.weight  # tied to the whole table; `_logits` reads its output rows
        self.head.out_features = c.vocab_size

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., outputs): the tied output layer over the characters it predicts."""
        return F.linear(x, self.wte.weight[: self.config.outputs])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    def _embed(self, idx: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        T = idx.size(1)
        if pos0 + T > self.config.context:
            raise ValueError(f"a window of {pos0 + T} characters is longer than the context ({self.config.context})")
        pos = torch.arange(pos0, pos0 + T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, d)

    def forward(self, idx: torch.Tensor, state: None = None, targets: torch.Tensor | None = None):
        # idx: (B, T <= context) -> logits: (B, T, vocab). No state: every window starts afresh.
        if state is not None:
            raise ValueError("the Transformer carries no state through forward; sample with prefill/step")
        x = self._embed(idx)
        for block in self.blocks:
            x, _, _ = block(x)
        logits = self._logits(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, None

    # --- sampling with a key/value cache --------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> KVCache:
        c = self.config
        shape = (c.n_layers, batch_size, c.heads, c.context, c.hidden // c.heads)
        dtype = self.wte.weight.dtype
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(batch_size, c.context, dtype=torch.long, device=device))

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx: (B, T >= 1) -> logits (B, vocab) for the character after it, and the cache of the
        window `window_start` gives (the last T - window_start(T) characters)."""
        idx = idx[:, window_start(idx.size(1), self.config.context):]
        cache = self.init_state(idx.size(0), idx.device) if cache is None else cache
        n = idx.size(1)
        x = self._embed(idx)
        for i, block in enumerate(self.blocks):
            x, k, v = block(x)
            cache.k[i, :, :, :n] = k
            cache.v[i, :, :, :n] = v
        cache.tokens[:, :n] = idx
        cache.length = n
        return self._logits(self.ln_f(x[:, -1])), cache

    @torch.no_grad()
    def step(self, idx: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx: (B,) -> logits (B, vocab), and the cache with idx appended (updated in place).

        Equal to `forward` over the window `window_start` gives, in eval mode. A full window slides
        forward by `context // 2` and is rebuilt with one pass over what remains (see `window_start`).
        """
        cache = self.init_state(idx.size(0), idx.device) if state is None else state
        C, pos = self.config.context, cache.length
        if pos == C:  # full: drop the oldest context // 2 characters and rebuild the rest
            keep = cache.tokens[:, window_start(C + 1, C):]
            return self.prefill(torch.cat([keep, idx[:, None]], 1), cache)
        x = self._embed(idx[:, None], pos)  # (B, 1, d)
        for i, block in enumerate(self.blocks):
            x = block.step(x, cache.k[i], cache.v[i], pos)
        cache.tokens[:, pos] = idx
        cache.length = pos + 1
        return self._logits(self.ln_f(x[:, 0])), cache

    # --- instruments: `charrnn inspect` and compare's gradients through time -------------------------
    @torch.no_grad()
    def iter_trace(self, ids: torch.Tensor) -> Iterator[Trace]:
        """ids: (N,), read through the strided windows of `window_start` (one Trace per window), so that
        each character is seen with the context it has in sampling and evaluation. Units: the residual
        stream after each block ("residual"). No gates."""
        C = self.config.context
        S = max(1, C // 2)
        done, w = 0, 0  # characters traced; window index
        while done < len(ids):
            lo = w * S
            window = ids[lo:lo + C][None]  # (1, <= C)
            x = self._embed(window)
            layers = []
            for block in self.blocks:
                x, _, _ = block(x)
                layers.append(x[0])
            keep = slice(done - lo, window.size(1))  # window 0 keeps all of it, each later one its last S
            yield Trace(done, self._logits(self.ln_f(x[0, keep])), {"residual": torch.stack(layers, 1)[keep]}, {})
            done, w = lo + window.size(1), w + 1

    def grad_through_time(self, rows: torch.Tensor, k_max: int) -> torch.Tensor:
        """rows: (B, W). The loss is each row's last character, predicted from the window of at most
        `context` characters before it. Returns (B, k_max): the norm of the loss's gradient with respect
        to the attention input (token + position embedding) k characters before the last input; NaN
        where k is beyond the window (the model cannot see that far)."""
        B, W = rows.shape
        n = min(self.config.context, W - 1)
        inp = rows[:, W - 1 - n:W - 1]
        with torch.enable_grad():
            x0 = (self.wte(inp) + self.wpe(torch.arange(n, device=rows.device))).detach().requires_grad_()
            x = x0
            for block in self.blocks:
                x, _, _ = block(x)
            loss = token_losses(self._logits(self.ln_f(x[:, -1])), rows[:, -1]).sum()
            (g,) = torch.autograd.grad(loss, [x0])
        norms = g.norm(dim=2)  # (B, n)
        out = torch.full((B, k_max), math.nan, device=rows.device)
        k = min(k_max, n - 1)
        out[:, :k] = norms[:, : n - 1].flip(1)[:, :k]  # k characters back: position n - 1 - k
        return out



class TransformerFamily(Family):
    name = "transformer"
    summary = "decoder-only Transformer (nanoGPT-style), trained on windows of its context"
    kinds = ("transformer",)
    options = ("heads", "context")
    refuses = {"seq_len": "its training windows are --context characters"}
    stateful = False
    # nanoGPT's CPU recipe (4 layers x 128, context 64) learns most in the budgets swept (benchmarks/README.md,
    # "Transformer presets": 60 s and 5 min on a 2-core Xeon, up to 9M characters); the longer context and
    # the wider, deeper model lost there, so they wait for budgets beyond what was measured.
    presets = (
        Preset("small", 0, dict(model="transformer", n_layers=4, hidden=128, heads=4, context=64, dropout=0.0,
                                batch_size=16, lr=2e-3, warmup_steps=50, min_lr_ratio=0.1)),
        Preset("medium", 12e6, dict(model="transformer", n_layers=4, hidden=128, heads=4, context=128, dropout=0.0,
                                    batch_size=12, lr=2e-3, warmup_steps=100, min_lr_ratio=0.1)),
        Preset("large", 25e6, dict(model="transformer", n_layers=6, hidden=192, heads=6, context=128, dropout=0.1,
                                   batch_size=12, lr=1.5e-3, warmup_steps=100, min_lr_ratio=0.1)),
    )
    presets_note = "from nanoGPT's CPU recipe, thresholds from the 60 s and 5 min sweep (benchmarks/README.md)"

    def build(self, config: ModelConfig) -> GPT:
        return GPT(config)

    def derived(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "seq_len": settings.get("context", ModelConfig.context)}  # windows of its context

    def checks(self, m, t):
        return [
            (m.heads >= 1, f"heads must be >= 1, not {m.heads}"),
            (m.context >= 1, f"context must be >= 1, not {m.context}"),
            (m.hidden % m.heads == 0, f"heads ({m.heads}) must divide hidden ({m.hidden}), the Transformer's width"),
            (t.seq_len == m.context,
             f"the Transformer trains on windows of --context characters; seq-len {t.seq_len} != context {m.context}"),
        ]

    def context(self, c: ModelConfig) -> int | None:
        return c.context

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

    def join_states(self, states: list) -> KVCache:
        raise NotImplementedError("a KVCache holds one length for all its streams")

    def state_rows(self, state: KVCache, rows: torch.Tensor) -> KVCache:
        return KVCache(state.k.index_select(1, rows), state.v.index_select(1, rows),
                       state.tokens.index_select(0, rows), state.length)

    def describe(self, cfg: dict[str, Any]) -> str:
        return f"{cfg['n_layers']}x{cfg['hidden']}, {cfg['heads']} heads, context {cfg['context']}"

    def width_step(self, settings: dict[str, Any]) -> int:
        return settings["heads"]


register(TransformerFamily())

"""The Transformer baseline (`--model transformer`): a decoder-only GPT as nanoGPT's model.py builds it.

It is stateless in training: `forward` reads whole windows of at most `context` characters and
returns no state, so its batches are independent random windows and its evaluation strided windows.
For sampling its state is a key/value cache (`KVCache`), so a step costs O(context), not
O(context^2); see `models.window_start` for how the window slides.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import ModelConfig
from ...models import PooledDropout, Trace, token_losses, window_start, with_input_only_rows


@dataclass
class KVCache:
    """A Transformer's sampling state: the keys and values of the characters in its window.

    `step` writes into these buffers in place and returns the same object.
    """

    k: torch.Tensor  # (n_layers, B, heads, context, head_dim)
    v: torch.Tensor  # (n_layers, B, heads, context, head_dim)
    tokens: torch.Tensor  # (B, context): the ids in the window, to rebuild it when it slides
    length: int = 0  # positions filled

    def rows(self, rows: torch.Tensor) -> KVCache:
        """The cache of the streams `rows` ((k,) indices, repeats allowed), in that order (copies)."""
        return KVCache(self.k.index_select(1, rows), self.v.index_select(1, rows), self.tokens.index_select(0, rows),
                       self.length)


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


class PortableGPT(nn.Module):
    """GPT's cached step for `charrnn export`, each stream at its own position: the key/value cache over
    the whole context is the state, the attention masked beyond each stream's position (the sampler's
    `step` attends to the filled part of its cache only, the same numbers). No window slides here: the
    driver rebuilds a full window (PortableStep.window)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """ids (B,), k and v (L, B, heads, C, head_dim), pos (B,) int64 < C: the next position of each
        stream -> logits (B, outputs), k and v with this character's written at pos, pos + 1."""
        m, c = self.model, self.model.config
        B, hd = ids.size(0), c.hidden // c.heads
        x = m.wte(ids) + m.wpe(pos)  # (B, d)
        slots = torch.arange(c.context, device=ids.device)[None]  # (1, C)
        here = (slots == pos[:, None])[:, None, :, None]  # (B, 1, C, 1): where this character goes
        hidden = (slots > pos[:, None])[:, None, None, :]  # (B, 1, 1, C): positions not yet filled
        new_k, new_v = [], []
        for i, block in enumerate(m.blocks):
            q, kk, vv = (t.view(B, c.heads, 1, hd) for t in block.attn.qkv(block.ln1(x)).split(c.hidden, -1))
            new_k.append(torch.where(here, kk, k[i]))
            new_v.append(torch.where(here, vv, v[i]))
            att = (q @ new_k[-1].transpose(-1, -2)) / math.sqrt(hd)  # (B, heads, 1, C)
            y = att.masked_fill(hidden, float("-inf")).softmax(-1) @ new_v[-1]  # (B, heads, 1, hd)
            x = x + block.attn.proj(y.reshape(B, c.hidden))
            x = x + block.mlp(block.ln2(x))
        return m._logits(m.ln_f(x)), torch.stack(new_k), torch.stack(new_v), pos + 1

"""Character-level language models: stacked LSTM, GRU or vanilla RNN, and a decoder-only Transformer.

Every model honours one contract, so the trainer, sampler and evaluator serve them all:

    forward(idx, state=None, targets=None) -> (logits, loss, state)
    prefill(idx) -> (logits, state)                 # read a prime; logits predict what follows it
    step(idx, state=None) -> (logits, state)        # one character per stream, for sampling
    stateful                                        # True: state carries across chunks (RNNs)
    iter_trace(ids) -> Iterator[Trace]              # what the units do on a text (`charrnn inspect`)
    grad_through_time(rows, k_max) -> (B, k_max)    # how far back the loss's gradient reaches

For the RNNs `state` is a tuple of tensors, each (n_layers, B, hidden): (h, c) for an LSTM, (h,)
otherwise. Training runs the fused `nn.LSTM/GRU/RNN` (cuDNN on CUDA, oneDNN on CPU); `step` runs
the same weights through a per-layer cell computation, which is several times faster one character
at a time than calling the fused module with a sequence of length one.

The Transformer (`GPT`) is stateless in training: `forward` reads whole windows of at most
`context` characters and returns no state. For sampling its state is a key/value cache (`KVCache`),
so a step costs O(context), not O(context^2); see `window_start` for how the window slides.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stepper import CellStepper

RNN_TYPES = ("lstm", "gru", "rnn")
MODEL_TYPES = RNN_TYPES + ("transformer",)
TRANSFORMER_ONLY = ("heads", "context")  # ModelConfig fields only the Transformer reads
RNN_ONLY = ("embed",)  # the Transformer's embedding width is `hidden`
GATE_NAMES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"), "rnn": ()}
State = tuple[torch.Tensor, ...]
TRACE_CHUNK = 1024  # characters per Trace: long enough to be fast, short enough for a progress bar


@dataclass
class Trace:
    """What a model computes on one stretch of a text, one entry per character read (for the
    microscope, `charrnn inspect`). Entry t is the model after reading character `start + t`."""

    start: int
    logits: torch.Tensor  # (T, outputs): the prediction of the character after each one
    units: dict[str, torch.Tensor]  # kind -> (T, n_layers, width), e.g. "hidden", "cell" (tanh c)
    gates: dict[str, torch.Tensor]  # gate -> (T, n_layers, hidden) in [0, 1]; empty without gates


@dataclass
class ModelConfig:
    vocab_size: int
    model: str = "lstm"  # lstm | gru | rnn | transformer
    n_layers: int = 2  # recurrent layers, or Transformer blocks
    hidden: int = 512  # hidden units per layer, or the Transformer's width
    embed: int = 64  # character embedding size (RNNs)
    dropout: float = 0.0
    heads: int = 4  # attention heads (Transformer); must divide hidden
    context: int = 128  # the most characters the Transformer attends to (its block size)
    # Tokens the output layer scores: the corpus's characters, which come first in the vocabulary. The
    # byte tokens after them are read (a prime or an eval text may hold characters the corpus has not)
    # but never predicted, so they cost nothing in training. None: every token, as checkpoints written
    # before this field have it.
    n_outputs: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_TYPES:
            raise ValueError(f"model must be one of {MODEL_TYPES}, not {self.model!r}")
        if self.n_outputs is not None and not 1 <= self.n_outputs <= self.vocab_size:
            raise ValueError(f"n_outputs must be in [1, vocab_size={self.vocab_size}], not {self.n_outputs}")

    @property
    def outputs(self) -> int:
        return self.vocab_size if self.n_outputs is None else self.n_outputs

    def to_dict(self) -> dict:
        """The fields this kind of model reads (an RNN's config has no heads or context)."""
        skip = RNN_ONLY if self.model == "transformer" else TRANSFORMER_ONLY
        skip += ("n_outputs",) if self.n_outputs is None else ()  # an old config reads back as it was written
        return {k: v for k, v in asdict(self).items() if k not in skip}


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.outputs, c.embed)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.model]
        # nn.RNN's dropout acts between layers; `self.drop` adds it after the last one.
        self.rnn = rnn_cls(c.embed, c.hidden, num_layers=c.n_layers, batch_first=True,
                           dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.outputs)
        self.embed = _with_input_only_rows(self.embed, c.vocab_size)

    stateful = True  # the hidden state carries from one chunk of a stream to the next

    @property
    def n_state(self) -> int:
        return 2 if self.config.model == "lstm" else 1

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        z = torch.zeros(self.config.n_layers, batch_size, self.config.hidden, device=device)
        return tuple(z.clone() for _ in range(self.n_state))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        # idx: (B, T) int64 -> x: (B, T, embed) -> out: (B, T, hidden) -> logits: (B, T, vocab)
        x = self.embed(idx)
        out, new = self.rnn(x, self._to_module_state(state))
        logits = self.head(self.drop(out))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        new_state = new if isinstance(new, tuple) else (new,)
        return logits, loss, new_state

    def _to_module_state(self, state: State | None):
        if state is None:
            return None
        return state if self.config.model == "lstm" else state[0]

    # --- one character at a time --------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, weights: str = "fp32") -> tuple[torch.Tensor, State]:
        """idx: (B, T >= 1) -> logits (B, vocab) for the character after it, and the state to step on.
        The fused pass reads all but the last character; the last goes through `step`."""
        state = self(idx[:, :-1])[2] if idx.size(1) > 1 else None
        return self.step(idx[:, -1], state, weights)

    @torch.no_grad()
    def step(self, idx: torch.Tensor, state: State | None = None, weights: str = "fp32") -> tuple[torch.Tensor, State]:
        """idx: (B,) -> logits (B, vocab), new state. Same maths as `forward` with T = 1, in eval mode.
        `weights="int8"` runs the step on int8 copies of the weights (CPU only; faster, approximate)."""
        fast = self._stepper(weights)
        if state is None:
            state = self.init_state(idx.size(0), idx.device)
        return fast(idx, state)

    def _stepper(self, weights: str = "fp32") -> CellStepper:
        # Rebuilt only when a weight has changed (in-place updates bump a tensor's version; a replaced
        # parameter changes its data pointer). Read from the submodules' own lists, not self.parameters():
        # that walk costs more than a third of an int8 step.
        params = (self.embed._parameters["weight"], *self.rnn._flat_weights, self.head._parameters["weight"],
                  self.head._parameters["bias"])
        key = tuple((p._version, p.data_ptr()) for p in params)
        cache = self.__dict__.setdefault("_stepper_cache", {})
        if cache.get(weights, (None,))[0] != key:
            cache[weights] = (key, CellStepper(self, weights))
        return cache[weights][1]

    # --- instruments: `charrnn inspect` and compare's gradients through time -------------------------
    def _layer_weights(self, k: int) -> tuple[torch.Tensor, ...]:
        r = self.rnn
        return tuple(getattr(r, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def cell(self, k: int, x: torch.Tensor, state: State) -> State:
        """One differentiable step of layer k: x (B, in), state ((B, H), ...) -> the new state, by the
        equations of nn.LSTM, nn.GRU and nn.RNN (gate rows i, f, g, o and r, z, n)."""
        w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
        gi, gh = F.linear(x, w_ih, b_ih), F.linear(state[0], w_hh, b_hh)
        if self.config.model == "lstm":
            i, f, g, o = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.config.model == "gru":
            (ir, iz, i_n), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(i_n + r * hn)
            return ((1 - z) * n + z * state[0],)
        return (torch.tanh(gi + gh),)

    def _single_layer(self, k: int) -> nn.Module:
        """Layer k alone as a fused module (nn.LSTM and friends return only the top layer's outputs)."""
        c = self.config
        m = type(self.rnn)(c.embed if k == 0 else c.hidden, c.hidden, num_layers=1, batch_first=True)
        m.load_state_dict(dict(zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                                   self._layer_weights(k))))
        return m.to(self.head.weight.device).eval()

    @torch.no_grad()
    def iter_trace(self, ids: torch.Tensor, chunk: int = TRACE_CHUNK) -> Iterator[Trace]:
        """ids: (N,), read as one stream from a zero state, `chunk` characters per Trace with the state
        carried. Units: every layer's h ("hidden") and, for an LSTM, tanh(c) ("cell", as Karpathy's
        pictures colour it). Gates: LSTM input, forget and output; GRU reset and update.

        Each layer's h comes from the fused module; its gates are then computed for all steps at once
        from x_t and h_{t-1}, and the LSTM's c by a loop over its elementwise recurrence."""
        c = self.config
        layers = [self._single_layer(k) for k in range(c.n_layers)]
        zero = torch.zeros(1, c.hidden, device=ids.device)
        h_last = [zero] * c.n_layers
        c_last = [zero] * c.n_layers
        for s in range(0, len(ids), chunk):
            x = self.embed(ids[s:s + chunk])  # (T, E)
            units: dict[str, list[torch.Tensor]] = {"hidden": []} | ({"cell": []} if c.model == "lstm" else {})
            gates: dict[str, list[torch.Tensor]] = {g: [] for g in GATE_NAMES[c.model]}
            for k, layer in enumerate(layers):
                start = (h_last[k][None], c_last[k][None]) if c.model == "lstm" else h_last[k][None]
                h = layer(x[None], start)[0][0]  # (T, H)
                w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
                gi = F.linear(x, w_ih, b_ih)
                gh = F.linear(torch.cat([h_last[k], h[:-1]]), w_hh, b_hh)  # from h_{t-1}
                if c.model == "lstm":
                    i, f, g, o = (gi + gh).chunk(4, 1)
                    i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
                    update = i * g.tanh()
                    cs = torch.empty_like(f)
                    prev = c_last[k][0]
                    for t in range(len(cs)):  # c_t = f_t * c_{t-1} + i_t * g_t
                        prev = torch.addcmul(update[t], f[t], prev, out=cs[t])
                    c_last[k] = cs[-1:]
                    units["cell"].append(cs.tanh())
                    gates["input"].append(i), gates["forget"].append(f), gates["output"].append(o)
                elif c.model == "gru":
                    r, z = (gi[:, : 2 * c.hidden] + gh[:, : 2 * c.hidden]).sigmoid().chunk(2, 1)
                    gates["reset"].append(r), gates["update"].append(z)
                units["hidden"].append(h)
                h_last[k] = h[-1:]
                x = h
            yield Trace(s, self.head(x), {k: torch.stack(v, 1) for k, v in units.items()},
                        {k: torch.stack(v, 1) for k, v in gates.items()})

    def grad_through_time(self, rows: torch.Tensor, k_max: int) -> torch.Tensor:
        """rows: (B, W) windows of text. The loss is each row's last character, predicted from those
        before it. Returns (B, k_max): the norm of that loss's gradient with respect to the whole
        recurrent state (every layer's h, and c for an LSTM) after reading the input k characters
        before the last one, for k = 1..k_max. The first W - k_max - 2 inputs only warm the state up."""
        B, W = rows.shape
        warm = W - 2 - k_max
        if warm < 0:
            raise ValueError(f"rows of {W} characters are too short for k_max={k_max}")
        with torch.no_grad():
            state = self(rows[:, :warm])[2] if warm else self.init_state(B, rows.device)
            x = self.embed(rows[:, warm:-1])  # (B, k_max + 1, E)
        layer_state = [tuple(s[k] for s in state) for k in range(self.config.n_layers)]
        # The state after step j as the next step reads it is tapped with zeros: the gradient of a tap is
        # the partial derivative with respect to that state as a whole, without the path by which a
        # layer's new h also feeds the layer above within the same step.
        taps: list[torch.Tensor] = []
        with torch.enable_grad():
            for j in range(k_max + 1):
                inp = x[:, j]
                for k in range(self.config.n_layers):
                    new = self.cell(k, inp, layer_state[k])
                    inp = new[0]
                    if j < k_max:
                        zeros = [torch.zeros_like(t, requires_grad=True) for t in new]
                        taps += zeros
                        new = tuple(t + z for t, z in zip(new, zeros))
                    layer_state[k] = new
            loss = token_losses(self.head(inp), rows[:, -1]).sum()  # rows are independent
            grads = torch.autograd.grad(loss, taps)
        per = len(taps) // k_max  # tensors per step
        sq = torch.stack([sum(g.pow(2).sum(1) for g in grads[j * per:(j + 1) * per]) for j in range(k_max)], 1)
        return sq.sqrt().flip(1)  # column k - 1 holds k: step j is k_max - j characters back


# --- the Transformer ------------------------------------------------------------------------------
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
        self.resid_drop = nn.Dropout(c.dropout)

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
                                 nn.Linear(4 * c.hidden, c.hidden, bias=False), nn.Dropout(c.dropout))

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

    stateful = False  # each training window stands alone: no state is carried between batches

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        if c.hidden % c.heads:
            raise ValueError(f"heads ({c.heads}) must divide hidden ({c.hidden})")
        self.wte = nn.Embedding(c.outputs, c.hidden)
        self.wpe = nn.Embedding(c.context, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.hidden, bias=False)
        self.head = nn.Linear(c.hidden, c.outputs, bias=False)
        self.head.weight = self.wte.weight  # weight tying: fewer parameters, learns faster
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled down by depth
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
        self.wte = _with_input_only_rows(self.wte, c.vocab_size, std=0.02)
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


def _with_input_only_rows(table: nn.Embedding, vocab_size: int, std: float = 1.0) -> nn.Embedding:
    """`table` (one row per output) grown to `vocab_size` rows with the byte tokens' rows, drawn after
    every other weight: the model's initial weights, and so its whole training on text without byte
    tokens, are then the same with byte fallback as without."""
    extra = vocab_size - table.num_embeddings
    if extra <= 0:
        return table
    rows = torch.randn(extra, table.embedding_dim, device=table.weight.device, dtype=table.weight.dtype) * std
    return nn.Embedding.from_pretrained(torch.cat([table.weight.detach(), rows]), freeze=False)


def build_model(config: ModelConfig) -> CharRNN | GPT:
    """The model `config.model` names."""
    return GPT(config) if config.model == "transformer" else CharRNN(config)


def unscored_loss(outputs: int) -> float:
    """The loss charged for a token the output layer does not score: a byte token, which stands for a
    character outside the corpus's vocabulary (each of its UTF-8 bytes is one token). The model never
    predicts bytes, so each costs ln(outputs) + ln(256) nats, a uniform guess among the characters it
    knows and then among the 256 byte values: finite, and more than any character it can predict costs
    a model no better than uniform."""
    return math.log(outputs) + math.log(256)


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., outputs), (...) -> (...) losses in fp32; a target beyond the outputs costs `unscored_loss`."""
    outputs = logits.size(-1)
    beyond = targets >= outputs
    ce = F.cross_entropy(logits.float().reshape(-1, outputs), targets.clamp(max=outputs - 1).reshape(-1),
                         reduction="none").view(targets.shape)
    return torch.where(beyond, torch.full_like(ce, unscored_loss(outputs)), ce)


def finite_weights(model: nn.Module) -> bool:
    """Whether every weight is a finite number (one host sync, however many tensors)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


# --- sizes, without building anything ---------------------------------------------------------------
# So that a model or batch too large for this machine is refused before anything is allocated (and
# a config with a million layers is not built just to be counted). tests/test_models.py checks these
# against the built models.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks of H rows in W_ih, W_hh


def param_count(c: ModelConfig) -> int:
    """The parameters `build_model(c)` has, by formula."""
    V, H, L = c.vocab_size, c.hidden, c.n_layers
    if c.model == "transformer":
        # token (tied with the output layer) and position embeddings; per block two LayerNorm weights,
        # qkv 3H^2, proj H^2, MLP 8H^2; the final LayerNorm
        return V * H + c.context * H + L * (12 * H * H + 2 * H) + H
    G, O = GATES[c.model], c.outputs
    layers = G * H * (c.embed + H) + (L - 1) * G * H * 2 * H + L * 2 * G * H  # W_ih, W_hh, b_ih, b_hh
    return V * c.embed + layers + H * O + O


def activation_floats(c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
    """About how many floats one forward pass over (rows, length) keeps alive, and its backward with
    `training`: embeddings, each layer's outputs and gates, the logits and their gradient."""
    V, H, L, n = c.outputs, c.hidden, c.n_layers, rows * length  # the logits: one per output
    if c.model == "transformer":
        # per block: residual, 2 LayerNorms, q/k/v, attention output, projection, MLP in and out (4H
        # each). The attention matrix is not counted: SDPA's fused kernels never materialise it.
        per = L * 16 * H + 3 * V
    else:
        per = c.embed + L * H * (GATES[c.model] + 2) + 3 * V
    return n * per * (2 if training else 1)


def sampling_state_floats(c: ModelConfig, streams: int) -> int:
    """The state `streams` sampling streams carry: an RNN's hidden (and cell) state, or a
    Transformer's key/value cache over its whole context."""
    if c.model == "transformer":
        return 2 * c.n_layers * streams * c.context * c.hidden + 2 * streams * c.context  # + the window's ids
    return c.n_layers * streams * c.hidden * (2 if c.model == "lstm" else 1)


def macs_per_char(c: ModelConfig) -> dict[str, float]:
    """Multiply-adds per character, by formula: {"train": forward and backward, "sample": one step}.

    Counted are the matrix products as the model defines them (embedding lookups, elementwise work
    and the sampler's shortcuts are not). The backward pass is counted as twice the forward (the
    gradients of the inputs and of the weights). An RNN's step costs the same at every character. A
    Transformer trains on windows of `context` characters, each attending on average to half the
    window (causal); sampling attends to the whole key/value cache and rebuilds the window each
    time it slides (`window_start`), which this counts too."""
    V, H, L = c.outputs, c.hidden, c.n_layers
    if c.model != "transformer":
        G = GATES[c.model]
        forward = G * H * (c.embed + H) + (L - 1) * G * H * 2 * H + H * V
        return {"train": 3.0 * forward, "sample": float(forward)}
    C, S = c.context, max(1, c.context // 2)
    dense = 12 * H * H * L  # qkv, projection and MLP per position
    # training: position p of a window attends to p + 1 keys; the output layer at every position
    attend = sum(p + 1 for p in range(C)) / C
    train = 3.0 * (dense + 2 * H * L * attend + H * V)
    # sampling, one cycle of S characters once the window is full: a rebuild over the C - S + 1
    # characters kept (causal attention among them, the output layer once), then S - 1 cached steps
    n = C - S + 1
    cycle = n * dense + 2 * H * L * n * (n + 1) / 2 + H * V
    cycle += sum(dense + 2 * H * L * keys + H * V for keys in range(n + 1, C + 1))
    return {"train": train, "sample": cycle / S}

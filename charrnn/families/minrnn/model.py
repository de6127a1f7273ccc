"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201): recurrent
layers whose gate and candidate state read the input only, never the previous state.

    minGRU:  z = sigmoid(W_z x),  h~ = g(W_h x),  h_t = (1 - z) h_{t-1} + z h~
    minLSTM: f = sigmoid(W_f x),  i = sigmoid(W_i x),  h~ = g(W_h x),
             h_t = f' h_{t-1} + i' h~  with f' = f / (f + i), i' = i / (f + i)

minLSTM's normalised gates add up to one, so both are h_t = (1 - z_t) h_{t-1} + z_t h~_t, minLSTM's
z being i' = sigmoid(log i - log f). The recurrence is linear in the state and its coefficients come
from the input alone: one matrix product computes them for a whole chunk, which an LSTM, whose
gates read h_{t-1}, must do one step at a time. What is left is an elementwise recurrence, solved for
the chunk by `scan`: on CUDA the paper's parallel scan in log space (a cumulative sum and a
log-cumsum-exp, `scan_log`); on a CPU one pass over time in a single autograd node (`GateScan`),
several times faster there. Sampling runs the same recurrence one character at a time (`step`).

g(x) = x + 1/2 for x >= 0, sigmoid(x) below: positive, so the state stays positive and its logarithm
exists. A layer on its own is weak (its only nonlinearity is in what it reads), so layers are stacked
as the paper's language models stack them, in pre-norm residual blocks with an MLP: x + minRNN(LN(x)),
then x + MLP(LN(x)) (4x, GELU): a Transformer block with its attention swapped for the recurrence.
The residual stream and the embedding are `hidden` wide. Inside, activations are time-major (T, B, H),
so a step of the recurrence reads contiguous memory.

The carried state is a tuple of one tensor (n_layers, B, hidden), as nn.GRU's, so the trainer,
truncated BPTT, exact resume and data-parallel training treat it as any RNN's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ... import quant
from ...config import ModelConfig
from ...errors import CharrnnError
from ...models import PooledDropout, State, Trace, token_losses, warm_state, with_input_only_rows
from ...quant import STEP_WEIGHTS, Int8Linear

GATES = {"mingru": ("update",), "minlstm": ("forget", "input")}  # what a layer's projection holds besides h~
SCAN_BLOCK = 16  # steps the log-space scan solves at once; longer blocks lose precision (log A grows)
TINY = 1e-30  # a zero state's logarithm, kept finite: its weight in the scan is then exactly negligible


def g(x: torch.Tensor) -> torch.Tensor:
    """x + 1/2 for x >= 0, sigmoid(x) below: continuous, positive, and the identity's slope above 0.
    (Written without torch.where, whose backward costs twice as much on a CPU.)"""
    return F.relu(x) + torch.sigmoid(x.clamp_max(0))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x): log(x + 1/2) for x >= 0, log(sigmoid(x)) below."""
    return torch.where(x >= 0, (x.clamp_min(0) + 0.5).log(), F.logsigmoid(x))


def scan(z_logit: torch.Tensor, cand: torch.Tensor, h0: torch.Tensor, parallel: bool | None = None) -> torch.Tensor:
    """h_t = (1 - z_t) h_{t-1} + z_t g(cand_t) for t = 1..T, with z = sigmoid(z_logit): (T, B, H) each,
    h0 (B, H) >= 0 -> (T, B, H), in the inputs' dtype (fp32: the caller casts).

    `parallel` (default: on CUDA) runs the log-space parallel scan (`scan_log`). On a CPU one pass over
    time is faster: the recurrence is O(T B H) either way, and torch's CPU logcumsumexp is slow
    (benchmarks/README.md, "minGRU and minLSTM"). Both are tested against each other and against the
    sequential step."""
    if parallel is None:
        parallel = z_logit.is_cuda
    if parallel:
        return scan_log(F.logsigmoid(-z_logit), F.logsigmoid(z_logit) + log_g(cand), h0)
    return GateScan.apply(torch.sigmoid(z_logit), g(cand), h0)


def scan_log(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor, block: int = SCAN_BLOCK) -> torch.Tensor:
    """The paper's parallel scan of h_t = a_t h_{t-1} + b_t from log a, log b (T, B, H), `block` steps
    at a time (`scan_block`) with the state carried from block to block: log A_t then sums at most
    `block` terms, so fp32 stays within 1e-5 of the sequential recurrence even with saturated gates
    (a whole chunk of 256 at once drifts to 5e-5)."""
    out = []
    for s in range(0, log_a.size(0), block):
        out.append(scan_block(log_a[s:s + block], log_b[s:s + block], h0))
        h0 = out[-1][-1]
    return torch.cat(out) if len(out) > 1 else out[0]


def scan_block(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The whole recurrence at once. With A_t = a_1...a_t: h_t = A_t (h0 + sum_{s<=t} b_s / A_s), so
    log h_t = log A_t + logcumsumexp([log h0, log b_s - log A_s])_t."""
    log_A = log_a.cumsum(0)
    start = h0.clamp_min(TINY).log()[None]
    return (log_A + torch.logcumsumexp(torch.cat([start, log_b - log_A]), 0)[1:]).exp()


class GateScan(torch.autograd.Function):
    """h_t = h_{t-1} + z_t (v_t - h_{t-1}) (torch.lerp) for (T, B, H) z and v, one pass over time, as one
    autograd node: a node per step would cost more than the arithmetic. Backward runs the adjoint
    the other way: G_t = dL/dh_t over all paths = grad_t + (1 - z_{t+1}) G_{t+1}; then
    dL/dz_t = G_t (v_t - h_{t-1}), dL/dv_t = G_t z_t, dL/dh0 = (1 - z_1) G_1."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, v: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        z, v = z.contiguous(), v.contiguous()
        out = torch.empty_like(v)
        h = h0.to(v.dtype)
        for t in range(len(z)):
            h = torch.lerp(h, v[t], z[t], out=out[t])
        ctx.save_for_backward(z, v, out, h0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, v, out, h0 = ctx.saved_tensors
        grad = grad.contiguous()
        keep = 1 - z  # (T, B, H): how much of h_{t-1} step t keeps
        G = torch.empty_like(grad)
        acc = G[-1].copy_(grad[-1])
        for t in range(len(grad) - 2, -1, -1):
            acc = torch.addcmul(grad[t], keep[t + 1], acc, out=G[t])
        prev = torch.cat([h0.to(out.dtype)[None], out[:-1]])
        gz = G * (v - prev)
        gv = G * z
        gh0 = (keep[0] * G[0]).to(h0.dtype) if ctx.needs_input_grad[2] else None
        return gz, gv, gh0


class MinLayer(nn.Module):
    """One residual block: the recurrence, then the MLP. Activations (T, B, H)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        H = c.hidden
        self.kind = c.model
        self.ln1 = nn.LayerNorm(H, bias=False)
        self.proj = nn.Linear(H, (len(GATES[c.model]) + 1) * H)  # gate(s) and candidate, from the input only
        self.ln2 = nn.LayerNorm(H, bias=False)
        # tanh-approximate GELU (as GPT-2): half the cost of the exact one in a sampling step
        self.mlp = nn.Sequential(nn.Linear(H, 4 * H), nn.GELU(approximate="tanh"), nn.Linear(4 * H, H),
                                 PooledDropout(c.dropout))
        self.drop = PooledDropout(c.dropout)

    def gate_and_candidate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., H) -> the logit of z and the candidate's pre-activation (..., H), in fp32 (the scan's
        precision, even after a bf16 product)."""
        p = self.proj(self.ln1(x))
        p = p.to(torch.promote_types(p.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
        if self.kind == "mingru":
            return p.chunk(2, -1)
        f, i, cand = p.chunk(3, -1)
        return F.softplus(-f) - F.softplus(-i), cand  # log i - log f: z = i' = i / (f + i)

    def gates(self, z_logit: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gates in [0, 1] as the paper names them: minGRU's update z, minLSTM's normalised f', i'."""
        z = torch.sigmoid(z_logit)
        return {"update": z} if self.kind == "mingru" else {"forget": 1 - z, "input": z}

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, B, H), h0 (B, H) -> x (T, B, H), the state after every step (T, B, H)."""
        z_logit, cand = self.gate_and_candidate(x)
        h = scan(z_logit, cand, h0.to(z_logit.dtype))
        return self.finish(x, h), h

    def finish(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The residual around the recurrence, then the MLP's."""
        x = x + self.drop(h.to(x.dtype))
        return x + self.mlp(self.ln2(x))

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, H), h (B, H) -> x, h: one character, by the recurrence itself."""
        z_logit, cand = self.gate_and_candidate(x)
        h = torch.lerp(h, g(cand), torch.sigmoid(z_logit))
        return self.finish(x, h), h


class MinStepper:
    """`stepper(idx, state) -> (logits, state)`: one character per stream, the sampling hot loop.

    It reads every matrix once per character, so it is bound by memory traffic and by Python
    dispatching each op: each LayerNorm's weight is folded into the matrix after it (one fewer op
    per norm), and with `weights="int8"` the matrices are held as int8 (fbgemm, as the classic RNNs'
    stepper.py), a quarter of the bytes. fp32 gives `forward`'s numbers to rounding (tests check)."""

    def __init__(self, model: MinRNN, weights: str = "fp32"):
        if weights not in STEP_WEIGHTS:
            raise CharrnnError(f"step weights must be one of {STEP_WEIGHTS}, not {weights!r}")
        if weights == "int8" and (model.head.weight.device.type != "cpu" or not quant.int8_supported()):
            raise CharrnnError("int8 sampling needs a CPU with fbgemm (x86); use fp32")
        c = model.config
        self.kind, self.H = c.model, c.hidden

        def linear(w: torch.Tensor, b: torch.Tensor, norm: nn.LayerNorm | None = None):
            w, b = w.detach().float(), b.detach().float()
            if norm is not None:  # W (xhat * gamma) + b = (W diag(gamma)) xhat + b
                w = w * norm.weight.detach().float()[None, :]
            if weights == "int8":
                return Int8Linear(w, b)
            return lambda x, w=w.contiguous(), b=b: F.linear(x, w, b)

        self.embed = model.embed.weight.detach().float()
        self.layers = [(linear(m.proj.weight, m.proj.bias, m.ln1), linear(m.mlp[0].weight, m.mlp[0].bias, m.ln2),
                        linear(m.mlp[2].weight, m.mlp[2].bias)) for m in model.layers]
        self.head = linear(model.head.weight, model.head.bias, model.ln_f)

    def __call__(self, idx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        H, shape = self.H, (self.H,)
        x = self.embed[idx]  # (B, H)
        new = []
        for k, (proj, up, down) in enumerate(self.layers):
            p = proj(F.layer_norm(x, shape))
            if self.kind == "mingru":
                z_logit, cand = p[:, :H], p[:, H:]
            else:
                z_logit, cand = F.softplus(-p[:, :H]) - F.softplus(-p[:, H:2 * H]), p[:, 2 * H:]
            h = torch.lerp(state[0][k], g(cand), torch.sigmoid(z_logit))
            new.append(h)
            x = x + h
            x = x + down(F.gelu(up(F.layer_norm(x, shape)), approximate="tanh"))
        return self.head(F.layer_norm(x, shape)), (torch.stack(new),)


class MinRNN(nn.Module):
    """Stacked minGRU or minLSTM blocks between a character embedding and an output layer."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.outputs, c.hidden)
        self.drop = PooledDropout(c.dropout)
        self.layers = nn.ModuleList(MinLayer(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.hidden, bias=False)
        self.head = nn.Linear(c.hidden, c.outputs)
        self.embed = with_input_only_rows(self.embed, c.vocab_size)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return (torch.zeros(self.config.n_layers, batch_size, self.config.hidden, device=device),)

    def forward(self, idx: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        # idx: (B, T) -> x: (T, B, H) through the blocks -> logits: (B, T, outputs); state (L, B, H)
        h0 = self.init_state(idx.size(0), idx.device)[0] if state is None else state[0]
        x = self.drop(self.embed(idx.t()))
        last = []
        for k, layer in enumerate(self.layers):
            x, h = layer(x, h0[k])
            last.append(h[-1])
        logits = self.head(self.ln_f(x)).transpose(0, 1)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, (torch.stack(last),)

    # --- one character at a time --------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, weights: str = "fp32") -> tuple[torch.Tensor, State]:
        """idx: (B, T >= 1) -> logits (B, outputs) for the character after it, and the state: the
        parallel pass reads all but the last character, `step` the last."""
        state = self(idx[:, :-1])[2] if idx.size(1) > 1 else None
        return self.step(idx[:, -1], state, weights)

    @torch.no_grad()
    def step(self, idx: torch.Tensor, state: State | None = None, weights: str = "fp32") -> tuple[torch.Tensor, State]:
        """idx: (B,) -> logits (B, outputs), new state; the same numbers as `forward` in eval mode.
        `weights="int8"` runs the step on int8 copies of the matrices (CPU only; faster, approximate)."""
        state = self.init_state(idx.size(0), idx.device) if state is None else state
        return self._stepper(weights)(idx, state)

    def _stepper(self, weights: str) -> MinStepper:
        # Rebuilt only when a weight has changed (an in-place update bumps a tensor's version; moving the
        # model changes its data pointer). The parameters are listed once, not walked every character.
        params = self.__dict__.get("_params")
        if params is None:
            params = self.__dict__["_params"] = list(self.parameters())
        key = tuple((p._version, p.data_ptr()) for p in params)
        cache = self.__dict__.setdefault("_stepper_cache", {})
        if cache.get(weights, (None,))[0] != key:
            cache[weights] = (key, MinStepper(self, weights))
        return cache[weights][1]

    def _step(self, idx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = self.embed(idx)
        new = []
        for k, layer in enumerate(self.layers):
            x, h = layer.step(x, state[0][k])
            new.append(h)
        return self.head(self.ln_f(x)), (torch.stack(new),)

    # --- instruments: `charrnn inspect` and compare's gradients through time -------------------------
    @torch.no_grad()
    def iter_trace(self, ids: torch.Tensor, chunk: int = 1024) -> Iterator[Trace]:
        """ids: (N,), read as one stream from a zero state, `chunk` characters per Trace. Units: each
        layer's state h ("hidden"); gates: minGRU's update gate z, minLSTM's normalised f' and i'."""
        h0 = self.init_state(1, ids.device)[0]  # (L, 1, H)
        for s in range(0, len(ids), chunk):
            x = self.embed(ids[s:s + chunk])[:, None]  # (T, 1, H)
            hidden, gates = [], {name: [] for name in GATES[self.config.model]}
            for k, layer in enumerate(self.layers):  # MinLayer.forward, keeping what it computes
                z_logit, cand = layer.gate_and_candidate(x)
                for name, v in layer.gates(z_logit).items():
                    gates[name].append(v[:, 0])
                h = scan(z_logit, cand, h0[k])
                x = layer.finish(x, h)
                hidden.append(h[:, 0])
            h0 = torch.stack([h[-1:] for h in hidden])
            yield Trace(s, self.head(self.ln_f(x[:, 0])), {"hidden": torch.stack(hidden, 1)},
                        {name: torch.stack(v, 1) for name, v in gates.items()})

    def grad_through_time(self, rows: torch.Tensor, k_max: int) -> torch.Tensor:
        """rows: (B, W). The loss is each row's last character, predicted from those before it. Returns
        (B, k_max): the norm of that loss's gradient with respect to the whole state (every layer's h)
        after reading the input k characters before the last one, k = 1..k_max."""
        warm, state = warm_state(self, rows, k_max)
        taps: list[torch.Tensor] = []
        with torch.enable_grad():
            for j in range(k_max + 1):
                logits, state = self._step(rows[:, warm + j], state)
                if j < k_max:  # tapped with zeros: the gradient of a tap is that of the state itself
                    tap = torch.zeros_like(state[0], requires_grad=True)
                    taps.append(tap)
                    state = (state[0] + tap,)
            loss = token_losses(logits, rows[:, -1]).sum()  # rows are independent
            grads = torch.autograd.grad(loss, taps)
        norms = torch.stack([gr.pow(2).sum((0, 2)) for gr in grads], 1).sqrt()  # (B, k_max), oldest first
        return norms.flip(1)

class PortableMinRNN(nn.Module):
    """MinRNN's step (`_step`: each block's own `step`), for `charrnn export`."""

    def __init__(self, model: MinRNN):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor):
        """ids (B,), h (L, B, H) -> logits (B, outputs), the new h."""
        logits, (h,) = self.model._step(ids, (h,))
        return logits, h

"""The classic recurrent models: stacked LSTM, GRU or vanilla RNN (`--model lstm|gru|rnn`).

Training runs the fused `nn.LSTM/GRU/RNN` (cuDNN on CUDA, oneDNN on CPU); `step` runs the same
weights through a per-layer cell computation (step.py), several times faster one character at a
time than the fused module with a sequence of length one, and optionally on int8 weights. The state
is a tuple of tensors, each (n_layers, B, hidden): (h, c) for an LSTM, (h,) otherwise.

Regularisation: `dropout` on the last layer's output (and between layers), and `weight_drop`,
DropConnect on the recurrent matrices W_hh (Merity et al. 2017, AWD-LSTM): each training batch runs
the fused module with a random share of W_hh's entries zeroed, the same at every time step, so the
state's own update is regularised without leaving the fused kernel. Both masks are windows into a
fixed pool of draws (models.pooled_mask), so neither costs a Bernoulli draw per step; the dropout that
nn.LSTM applies between its own layers draws afresh. On cuDNN the masked matrices are written into a
buffer laid out as cuDNN reads it (`FlatWeightDrop`), so the kernel runs on the weights in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import ModelConfig
from ...models import (
    TRACE_CHUNK,
    PooledDropout,
    State,
    Trace,
    pooled_mask,
    token_losses,
    warm_state,
    with_input_only_rows,
)
from .step import CellStepper

GATE_NAMES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"), "rnn": ()}


_VF_RNN = {"LSTM": torch._VF.lstm, "GRU": torch._VF.gru, "RNN_TANH": torch._VF.rnn_tanh}


def named_weights(rnn: nn.RNNBase) -> list[tuple[str, torch.Tensor]]:
    """The module's parameters in the order its fused kernel takes them (read from the module itself:
    `_flat_weights` can still hold the tensors a functional_call swapped in)."""
    return [(name, getattr(rnn, name)) for name in rnn._flat_weights_names]


def cudnn_flatten(rnn: nn.RNNBase, weights: list[torch.Tensor]) -> None:
    """Lay `weights` (an RNN's in `_flat_weights` order) out in one buffer as cuDNN reads it, each tensor
    becoming a view of it: what nn.RNNBase.flatten_parameters does for a module's own parameters."""
    import torch.backends.cudnn.rnn as cudnn_rnn  # (torch's own module; it needs a CUDA build of torch)

    with torch.no_grad():
        torch._cudnn_rnn_flatten_weight(weights, 4, rnn.input_size, cudnn_rnn.get_cudnn_mode(rnn.mode),
                                        rnn.hidden_size, 0, rnn.num_layers, rnn.batch_first, False)


class FlatWeightDrop:
    """DropConnect on W_hh that cuDNN runs in place.

    cuDNN reads an RNN's weights where they are only when all of them are views into one buffer in its
    own layout. A masked W_hh is a new tensor each step, and handed to nn.LSTM (torch.func.functional_call)
    it made cuDNN copy every weight into a fresh buffer on every forward, with a warning. Here the buffer
    holds the module's W_ih, b_ih and b_hh parameters and, where W_hh would be, `slots`: each forward
    writes W_hh * mask into them (the one copy DropConnect needs; W_hh itself in eval mode) and runs the
    fused kernel on [W_ih, slot, b_ih, b_hh] of every layer. The W_hh parameters live apart, and get
    their gradient back through that copy. The layout is rebuilt whenever the parameters move (`.to()`,
    or nn.LSTM flattening them again)."""

    def __init__(self, rnn: nn.RNNBase, flatten=None):
        self.rnn, self.flatten = rnn, flatten or cudnn_flatten
        self.key: tuple | None = None
        self.slots: list[torch.Tensor] = []

    def _weights(self) -> list[torch.Tensor]:
        """The module's weights in `_flat_weights` order, each W_hh replaced by its slot."""
        slots = iter(self.slots)
        return [next(slots) if name.startswith("weight_hh") else w for name, w in named_weights(self.rnn)]

    def _layout(self) -> None:
        key = tuple(w.data_ptr() for _, w in named_weights(self.rnn))
        if key == self.key:
            return
        with torch.no_grad():
            hh = [w for name, w in named_weights(self.rnn) if name.startswith("weight_hh")]
            for w in hh:  # out of the module's buffer, into storage of its own
                w.set_(w.detach().clone())
            self.slots = [torch.empty_like(w) for w in hh]
            self.flatten(self.rnn, self._weights())
        self.key = tuple(w.data_ptr() for _, w in named_weights(self.rnn))

    def __call__(self, x: torch.Tensor, hx, masked: list[torch.Tensor]):
        """x (B, T, in), hx as nn.LSTM/GRU/RNN take it (never None), `masked`: each layer's W_hh as this
        forward uses it -> what the module returns."""
        self._layout()
        for slot, w in zip(self.slots, masked):
            slot.detach_().copy_(w)  # a fresh graph: the last step's copy is not this one's input
        r = self.rnn
        hx = hx if isinstance(hx, tuple) else (hx,)
        out = _VF_RNN[r.mode](x, hx if r.mode == "LSTM" else hx[0], self._weights(), True, r.num_layers, r.dropout,
                              r.training, False, True)
        return out[0], (tuple(out[1:]) if r.mode == "LSTM" else out[1])


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
        self.drop = PooledDropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.outputs)
        self.embed = with_input_only_rows(self.embed, c.vocab_size)

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
        out, new = self._recurrence(x, self._to_module_state(state))
        logits = self.head(self.drop(out))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        new_state = new if isinstance(new, tuple) else (new,)
        return logits, loss, new_state

    def _recurrence(self, x: torch.Tensor, hx):
        """The fused module over x (B, T, embed), with DropConnect on W_hh in training."""
        if self.config.weight_drop == 0:
            return self.rnn(x, hx)
        w_hh = [w for name, w in named_weights(self.rnn) if name.startswith("weight_hh")]
        if self.training:
            w_hh = [w * pooled_mask(self, w, self.config.weight_drop, salt=1) for w in w_hh]
        if self._flat_weight_drop_applies(x):
            if hx is None:
                zeros = x.new_zeros(self.config.n_layers, x.size(0), self.config.hidden)
                hx = (zeros, zeros.clone()) if self.config.model == "lstm" else zeros
            return self.__dict__.setdefault("_flat_drop", FlatWeightDrop(self.rnn))(x, hx, w_hh)
        if not self.training:
            return self.rnn(x, hx)
        names = [n for n in self.rnn._flat_weights_names if n.startswith("weight_hh")]
        return torch.func.functional_call(self.rnn, dict(zip(names, w_hh)), (x, hx))

    def _flat_weight_drop_applies(self, x: torch.Tensor) -> bool:
        """cuDNN runs this module (FlatWeightDrop); torch.compile traces the plain path instead."""
        return (x.is_cuda and torch.backends.cudnn.enabled and torch.backends.cudnn.is_acceptable(x)
                and not torch.compiler.is_compiling())

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
        # that walk would cost a large share of an int8 step.
        params = (self.embed._parameters["weight"], *(w for _, w in named_weights(self.rnn)),
                  self.head._parameters["weight"], self.head._parameters["bias"])
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
        warm, state = warm_state(self, rows, k_max)
        with torch.no_grad():
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


class PortableCharRNN(nn.Module):
    """CharRNN's step by the equations of `cell`, in plain tensor operations (`charrnn export`)."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *state: torch.Tensor):
        """ids (B,), state ((L, B, H), ...) -> logits (B, outputs), the new state's tensors."""
        m = self.model
        x, new = m.embed(ids), []
        for k in range(m.config.n_layers):
            new.append(m.cell(k, x, tuple(s[k] for s in state)))
            x = new[-1][0]
        return (m.head(x), *(torch.stack([layer[i] for layer in new]) for i in range(len(state))))

"""Character-level recurrent language models: stacked LSTM, GRU or vanilla RNN.

Every model honours one contract, so the trainer, sampler and evaluator serve them all:

    forward(idx, state=None, targets=None) -> (logits, loss, state)
    step(idx, state=None) -> (logits, state)        # one character per stream, for sampling

`state` is a tuple of tensors, each (n_layers, B, hidden): (h, c) for an LSTM, (h,) otherwise.
Training runs the fused `nn.LSTM/GRU/RNN` (cuDNN on CUDA, oneDNN on CPU); `step` runs the same
weights through a per-layer cell computation, which is several times faster one character at a
time than calling the fused module with a sequence of length one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

RNN_TYPES = ("lstm", "gru", "rnn")
State = tuple[torch.Tensor, ...]


@dataclass
class ModelConfig:
    vocab_size: int
    model: str = "lstm"  # lstm | gru | rnn
    n_layers: int = 2
    hidden: int = 512
    embed: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in RNN_TYPES:
            raise ValueError(f"model must be one of {RNN_TYPES}, not {self.model!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.model]
        # nn.RNN's dropout acts between layers; `self.drop` adds it after the last one.
        self.rnn = rnn_cls(c.embed, c.hidden, num_layers=c.n_layers, batch_first=True,
                           dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)

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
    def step(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """idx: (B,) -> logits (B, vocab), new state. Same maths as `forward` with T = 1, in eval mode."""
        fast = self._stepper()
        if state is None:
            state = self.init_state(idx.size(0), idx.device)
        return fast(idx, state)

    def _stepper(self) -> CellStepper:
        # Rebuilt only when a weight has changed (optimizer steps bump the tensors' versions).
        key = tuple(p._version for p in self.parameters()) + tuple(p.data_ptr() for p in self.parameters())
        cached = getattr(self, "_stepper_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, CellStepper(self))
            object.__setattr__(self, "_stepper_cache", cached)
        return cached[1]


class CellStepper:
    """Per-step inference over a CharRNN's weights, laid out for one small matmul per layer.

    Layer 0's input projection is folded into the embedding: E @ W_ih0^T + b_ih0 is a (vocab, G*H)
    table, so a step starts with a row lookup instead of a matmul. Each layer's two biases are
    summed once, and W_hh (and W_ih for layers > 0) are pre-transposed and contiguous.
    """

    def __init__(self, model: CharRNN):
        c = model.config
        self.kind = c.model
        self.hidden = c.hidden
        rnn = model.rnn
        with torch.no_grad():
            w_ih0 = rnn.weight_ih_l0.float()
            self.table = (model.embed.weight.float() @ w_ih0.T + rnn.bias_ih_l0.float()).contiguous()
            self.layers = []
            for k in range(c.n_layers):
                w_ih = getattr(rnn, f"weight_ih_l{k}").float().T.contiguous()
                w_hh = getattr(rnn, f"weight_hh_l{k}").float().T.contiguous()
                b_ih = getattr(rnn, f"bias_ih_l{k}").float()
                b_hh = getattr(rnn, f"bias_hh_l{k}").float()
                self.layers.append((w_ih, w_hh, b_ih, b_hh))
            self.head_w = model.head.weight.float().T.contiguous()
            self.head_b = model.head.bias.float().contiguous()

    def __call__(self, idx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        H = self.hidden
        hs, cs = list(state[0].unbind(0)), (list(state[1].unbind(0)) if self.kind == "lstm" else None)
        x = None
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.layers):
            h = hs[k].float()
            # gi: input contribution (B, G*H), bias b_ih included
            gi = self.table[idx] if k == 0 else torch.addmm(b_ih, x, w_ih)
            if self.kind == "lstm":
                gates = torch.addmm(gi + b_hh, h, w_hh)  # (B, 4H): i, f, g, o
                i, f, g, o = gates.split(H, 1)
                c = torch.sigmoid(f) * cs[k].float() + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                cs[k] = c
            elif self.kind == "gru":
                gh = torch.addmm(b_hh, h, w_hh)  # (B, 3H): r, z, n
                ir, iz, in_ = gi.split(H, 1)
                hr, hz, hn = gh.split(H, 1)
                r = torch.sigmoid(ir + hr)
                z = torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                h = n + z * (h - n)  # (1 - z) * n + z * h
            else:
                h = torch.tanh(torch.addmm(gi + b_hh, h, w_hh))
            hs[k] = h
            x = h
        logits = torch.addmm(self.head_b, x, self.head_w)
        new = (torch.stack(hs),) if cs is None else (torch.stack(hs), torch.stack(cs))
        return logits, new


def build_model(config: ModelConfig) -> CharRNN:
    return CharRNN(config)

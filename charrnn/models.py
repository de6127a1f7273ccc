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

from .stepper import CellStepper

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


def build_model(config: ModelConfig) -> CharRNN:
    return CharRNN(config)

"""The bare PyTorch training loop that charrnn's trainer is measured against.

"The same work" means: the same network (embedding -> fused nn.LSTM/GRU/RNN -> linear, same shapes
and initial weights, no dropout), the same batches (B streams x T characters, the hidden state
carried from batch to batch and detached), the same loss (mean cross-entropy in fp32), the same
optimizer (AdamW with weight decay on matrices only, as one fused kernel on the CPU and on CUDA, where
the trainer's `device.fused_adamw` picks it too; PyTorch's per-tensor foreach default elsewhere), the
same gradient-norm clipping (charrnn clips at 1.0 by default, so the reference does too), the same
autocast and, for fp16, the same GradScaler. What the reference leaves out is everything else
charrnn's loop does: reading batches from the memory-mapped corpus (the reference's are ready in
memory, on the device), the learning-rate schedule, the loss accumulation, metric records, the
progress bar, Ctrl-C handling and the checks for stops and validation. Those are the trainer's
overhead, and the ratio of the two loops' chars/s measures it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


class BareRNN(nn.Module):
    """embedding -> fused RNN -> linear. Parameter names match charrnn's CharRNN, so weights load."""

    def __init__(self, vocab: int, kind: str = "lstm", n_layers: int = 2, hidden: int = 512, embed: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](embed, hidden, n_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        self.kind = kind

    def forward(self, x, state=None):
        out, state = self.rnn(self.embed(x), state)  # (B, T, hidden)
        return self.head(out), state  # (B, T, vocab)


def bare_steps(model: BareRNN, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], lr: float = 3e-3,
               weight_decay: float = 0.1, betas=(0.9, 0.99), grad_clip: float = 1.0,
               precision: str = "fp32", device: str = "cpu") -> Iterator[torch.Tensor]:
    """Train on `batches`, yielding each step's loss (a tensor: nothing here syncs the device)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas,
                            fused=torch.device(device).type in ("cuda", "cpu"))  # the trainer's AdamW
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    amp = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
    model.train()
    state = None
    for x, y in batches:
        with amp:
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        yield loss.detach()

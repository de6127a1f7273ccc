"""One character per stream through a CharRNN's weights: the RNN family's sampling hot loop.

Sampling runs one small matrix-vector product per layer per character, so on a CPU its cost is
(a) reading the weights from memory every step and (b) Python dispatching each tensor op (a few
microseconds apiece). `CellStepper` cuts both:

- layer 0's input projection is folded into the embedding: E @ W_ih0^T + b_ih0 (+ b_hh0) is a
  (vocab, G*H) table, so a step starts with a row lookup instead of a matmul;
- each layer's gates are computed into one buffer with `out=`/in-place ops, and the LSTM's gate
  rows are reordered to i, f, o, g so one sigmoid covers three gates and one tanh the fourth;
- the weights can be stored as int8 (`weights="int8"`): fbgemm's dynamic-quantised linear, which
  runs on AVX2 and reads a quarter of the bytes (3.3 MB instead of 13 MB for LSTM 2x512, which then
  fits this class of CPU's 8 MB L3). It is an approximation: see benchmarks/README.md for what it
  costs in validation loss. fp32 is exact: the same numbers as the fused forward pass (tests check).

A stepper is built from the weights as they are (the model rebuilds it when they change). Each call
allocates its own outputs, so a returned state is never overwritten by a later step.
"""

from __future__ import annotations

import torch

from ... import quant
from ...errors import CharrnnError
from ...models import State
from ...quant import STEP_WEIGHTS, Int8Linear


class CellStepper:
    """`stepper(idx, state) -> (logits, state)` for one CharRNN: what `CharRNN.step` calls."""

    def __init__(self, model, weights: str = "fp32"):
        if weights not in STEP_WEIGHTS:
            raise CharrnnError(f"step weights must be one of {STEP_WEIGHTS}, not {weights!r}")
        c = model.config
        device = model.head.weight.device
        if weights == "int8" and (device.type != "cpu" or not quant.int8_supported()):
            raise CharrnnError("int8 sampling needs a CPU with fbgemm (x86); use fp32")
        self.kind, self.hidden, self.n_layers, self.weights = c.model, c.hidden, c.n_layers, weights
        H = c.hidden
        rnn = model.rnn
        p = {name: t.detach().float() for name, t in rnn.named_parameters()}
        # LSTM gate rows i, f, g, o -> i, f, o, g: sigmoid over [:3H], tanh over [3H:]
        order = None
        if self.kind == "lstm":
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
            order = order.to(device)

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t if order is None else t.index_select(0, order)

        with torch.no_grad():
            # GRU keeps b_hn apart: it sits inside r * (W_hn h + b_hn); LSTM and RNN biases simply add.
            fold_hh = self.kind != "gru"
            b0 = p["bias_ih_l0"] + (p["bias_hh_l0"] if fold_hh else 0)
            self.table = (model.embed.weight.detach().float() @ rows(p["weight_ih_l0"]).T + rows(b0)).contiguous()
            self.layers = []
            for k in range(c.n_layers):
                w_ih, w_hh = rows(p[f"weight_ih_l{k}"]), rows(p[f"weight_hh_l{k}"])
                b_ih, b_hh = rows(p[f"bias_ih_l{k}"]), rows(p[f"bias_hh_l{k}"])
                if weights == "int8":
                    # one call per layer: [x, h] @ [W_ih, W_hh]^T (fbgemm has a large fixed cost per call)
                    if k == 0 or not fold_hh:  # (layer 0's folded biases live in the table)
                        layer = {"hh": Int8Linear(w_hh, torch.zeros_like(b_hh) if fold_hh else b_hh)}
                        if k > 0:
                            layer["ih"] = Int8Linear(w_ih, b_ih)
                    else:
                        layer = {"cat": Int8Linear(torch.cat([w_ih, w_hh], 1), b_ih + b_hh)}
                else:
                    layer = {"w_ih": w_ih.T.contiguous(), "w_hh": w_hh.T.contiguous(),
                             "b": (b_ih + b_hh) if fold_hh else b_ih, "b_hh": b_hh}
                self.layers.append(layer)
            head_w, head_b = model.head.weight.detach().float(), model.head.bias.detach().float()
            if weights == "int8":
                self.head = Int8Linear(head_w, head_b)
            else:
                self.head_w, self.head_b = head_w.T.contiguous(), head_b.contiguous()

    # --- the matmuls, in fp32 or int8 ------------------------------------------------------------
    def _gates(self, k: int, idx: torch.Tensor, x: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """Pre-activations (B, G*H) of layer k: input and recurrent parts summed (LSTM, RNN)."""
        layer = self.layers[k]
        if self.weights == "int8":
            if k == 0:
                return layer["hh"](h).add_(self.table.index_select(0, idx))
            return layer["cat"](torch.cat([x, h], 1))
        g = self.table.index_select(0, idx) if k == 0 else torch.addmm(layer["b"], x, layer["w_ih"])
        return g.addmm_(h, layer["w_hh"])

    def _gru_parts(self, k: int, idx: torch.Tensor, x: torch.Tensor | None, h: torch.Tensor):
        """GRU: input part (B, 3H) and recurrent part (B, 3H) apart, since r gates only the latter's n."""
        layer = self.layers[k]
        if self.weights == "int8":
            gi = self.table.index_select(0, idx) if k == 0 else layer["ih"](x)
            return gi, layer["hh"](h)
        gi = self.table.index_select(0, idx) if k == 0 else torch.addmm(layer["b"], x, layer["w_ih"])
        return gi, torch.addmm(layer["b_hh"], h, layer["w_hh"])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights == "int8":
            return self.head(x)
        return torch.addmm(self.head_b, x, self.head_w)

    # --- one step ---------------------------------------------------------------------------------
    # Each tensor call from Python costs a few microseconds however small the tensor, so the step makes
    # as few as it can: views come from one unbind/chunk call each, and the arithmetic runs in place.
    def __call__(self, idx: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """idx: (B,) -> logits (B, vocab), new state ((L, B, H) tensors, freshly allocated)."""
        H = self.hidden
        h_old = state[0] if state[0].dtype == torch.float32 else state[0].float()
        h_new = torch.empty_like(h_old)
        hs_old, hs_new = h_old.unbind(0), h_new.unbind(0)
        if self.kind == "lstm":
            c_old = state[1] if state[1].dtype == torch.float32 else state[1].float()
            c_new = torch.empty_like(c_old)
            cs_old, cs_new = c_old.unbind(0), c_new.unbind(0)
        x = None
        for k in range(self.n_layers):
            h, out = hs_old[k], hs_new[k]
            if self.kind == "lstm":
                g = self._gates(k, idx, x, h)  # (B, 4H): i, f, o, g
                i, f, o, gg = g.chunk(4, 1)
                g[:, : 3 * H].sigmoid_()
                gg.tanh_()
                c = cs_new[k]
                torch.mul(f, cs_old[k], out=c).addcmul_(i, gg)  # c = f * c + i * g
                torch.tanh(c, out=out).mul_(o)  # h = o * tanh(c)
            elif self.kind == "gru":
                gi, gh = self._gru_parts(k, idx, x, h)  # (B, 3H): r, z, n
                rz = gi[:, : 2 * H].add_(gh[:, : 2 * H]).sigmoid_()
                r, z = rz.chunk(2, 1)
                n = gi[:, 2 * H :].addcmul_(r, gh[:, 2 * H :]).tanh_()  # n = tanh(i_n + r * h_n)
                torch.sub(h, n, out=out).mul_(z).add_(n)  # h' = n + z * (h - n)
            else:
                torch.tanh(self._gates(k, idx, x, h), out=out)
            x = out
        logits = self._logits(x)
        return logits, ((h_new, c_new) if self.kind == "lstm" else (h_new,))

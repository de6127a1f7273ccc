"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), declared: the family's presets
and sizes (`--model mingru|minlstm`). The models are in model.py; this module does not import it (nor
torch), so that `charrnn train --help` lists the options at once.
"""

from __future__ import annotations

from ...config import ModelConfig
from ..base import Family, PortableStep, Preset, StateSpec, register

BLOCKS = {"mingru": 2, "minlstm": 3}  # a layer's projections: its gate(s) and its candidate state


class MinRNNFamily(Family):
    name = "minrnn"
    summary = "minGRU or minLSTM: gates from the input only, so training solves the recurrence for a whole chunk at once"
    kinds = ("mingru", "minlstm")
    step_weights = ("fp32", "int8")
    gradient_of = "the recurrent state (every layer's h)"
    token_rows = {"embed.weight": "input", "head.weight": "output", "head.bias": "output"}
    # Two small layers for the shortest budgets, three wider ones once the budget buys a few million
    # characters of them: set from runs that recorded no row (benchmarks/README.md, "minGRU and minLSTM"),
    # so a starting point, not a measured optimum. The dropout then follows the epochs (presets.dropout_for).
    presets = (
        Preset("small", 0, dict(model="mingru", n_layers=2, hidden=256, dropout=0.0, batch_size=16, seq_len=128,
                                lr=6e-3, warmup_steps=50, min_lr_ratio=0.1)),
        Preset("medium", 3e6, dict(model="mingru", n_layers=3, hidden=384, dropout=0.0, batch_size=16,
                                   seq_len=128, lr=4e-3, warmup_steps=100, min_lr_ratio=0.1)),
    )
    presets_note = "minGRU presets set by hand, not yet measured (benchmarks/README.md); minLSTM shares them"

    def build(self, config: ModelConfig):
        from .model import MinRNN  # here, not at the top: declaring the family must not import torch

        return MinRNN(config)

    def param_count(self, c: ModelConfig) -> int:
        H, G = c.hidden, BLOCKS[c.model]
        block = 2 * H + G * H * (H + 1) + 4 * H * (H + 1) + H * (4 * H + 1)  # 2 LayerNorms, proj, MLP
        return c.vocab_size * H + c.n_layers * block + H + H * c.outputs + c.outputs

    def activation_floats(self, c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
        # per block: LayerNorms, the projection, the coefficients and the scan's copies (about 8H), the
        # residual and the MLP (4H in, 4H after GELU); the logits and their gradient
        H, G = c.hidden, BLOCKS[c.model]
        per = H + c.n_layers * (G + 20) * H + 3 * c.outputs
        return rows * length * per * (2 if training else 1)

    def sampling_state_floats(self, c: ModelConfig, streams: int) -> int:
        return c.n_layers * streams * c.hidden

    def macs_per_char(self, c: ModelConfig) -> dict[str, float]:
        # the same at every character, in training (all at once) as in sampling (one at a time)
        H, G = c.hidden, BLOCKS[c.model]
        forward = c.n_layers * (G * H * H + 8 * H * H) + H * c.outputs
        return {"train": 3.0 * forward, "sample": float(forward)}

    def portable(self, model) -> PortableStep:
        from .model import PortableMinRNN

        c = model.config
        return PortableStep(PortableMinRNN(model).eval(), (StateSpec("h", (c.n_layers, "batch", c.hidden)),),
                            web="minrnn")


register(MinRNNFamily())

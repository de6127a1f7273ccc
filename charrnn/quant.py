"""int8 weights for the sampling steps: fbgemm's dynamic-quantised linear (x86 CPUs), which reads a
quarter of the bytes fp32 does. It is an approximation; benchmarks/README.md says what it costs in
validation loss and buys in speed. Families whose step can run on it list "int8" in `step_weights`.
"""

from __future__ import annotations

import warnings

import torch

STEP_WEIGHTS = ("fp32", "int8")


def int8_supported() -> bool:
    """fbgemm (x86) dynamic quantisation is in this torch build (it is deprecated upstream; may go)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


class Int8Linear:
    """x @ W^T + b with W stored as int8, one scale per output row (fbgemm, dynamic activations)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        # w: (N, K) fp32. Symmetric per-row scales keep the rows with small weights precise.
        scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
        zero = torch.zeros(w.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch >= 2.10
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w.contiguous(), scale, zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, b.contiguous())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range=True: 7-bit activations, the setting fbgemm needs to avoid int16 saturation
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)

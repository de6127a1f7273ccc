"""1. The matmul ceiling: what one large matrix product reaches on this machine, in fp32 and bf16.

Two paths each: `torch.mm` (MKL sgemm for fp32; oneDNN for bf16) and oneDNN's own linear
(`mkldnn_linear` on oneDNN-layout tensors, the kernels oneDNN's RNNs are built from). The ceiling of a
precision is the faster of its two paths; the other sections express their throughput as a fraction
of it. bf16 is measured only where the CPU has native bf16: emulated bf16 is ~300x slower and would be
a meaningless "ceiling".
"""

from __future__ import annotations

import os

import torch

from charrnn.device import cpu_supports_bf16

from .common import NOT_SUPPORTED_BF16, Section, best_time


def _gflops(n: int, seconds: float) -> float:
    return 2 * n**3 / seconds / 1e9


def measure(quick: bool = False) -> tuple[Section, dict]:
    """Returns the section and the ceilings {'fp32': GFLOP/s, 'bf16': GFLOP/s or None}, measured with
    every core (the physical limit), plus fp32 with the threads the other sections use."""
    sec = Section("ceiling")
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    if threads != cores:
        a = torch.randn(512 if quick else 2048, 512 if quick else 2048)
        t = best_time(lambda: torch.mm(a, a), repeat=2 if quick else 5, number=3)
        sec.row(f"fp32 torch.mm, {threads} thread{'s' if threads > 1 else ''} (what the other sections use)",
                round(_gflops(a.size(0), t), 1), "GFLOP/s", extra={"seconds": t, "threads": threads})
    torch.set_num_threads(cores)
    try:
        return _measure(sec, quick, cores)
    finally:
        torch.set_num_threads(threads)


def _measure(sec: Section, quick: bool, cores: int) -> tuple[Section, dict]:
    n = 512 if quick else 2048
    repeat = 2 if quick else 7
    ceilings: dict[str, float | None] = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if name == "bf16" and not cpu_supports_bf16():
            for path in ("torch.mm", "oneDNN linear"):
                sec.row(f"{name} {path} {n}x{n}x{n}", None, "GFLOP/s", NOT_SUPPORTED_BF16)
            ceilings[name] = None
            continue
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        t_mm = best_time(lambda: torch.mm(a, b), repeat=repeat, number=3 if quick else 5)
        values = [_gflops(n, t_mm)]
        sec.row(f"{name} torch.mm {n}x{n}x{n}", round(values[0], 1), "GFLOP/s", extra={"seconds": t_mm})
        if torch.backends.mkldnn.is_available():
            x, w = a.to_mkldnn(), b.to_mkldnn()
            t_dnn = best_time(lambda: torch._C._nn.mkldnn_linear(x, w, None), repeat=repeat, number=3 if quick else 5)
            values.append(_gflops(n, t_dnn))
            sec.row(f"{name} oneDNN linear {n}x{n}x{n}", round(values[1], 1), "GFLOP/s", extra={"seconds": t_dnn})
        else:
            sec.row(f"{name} oneDNN linear", None, "GFLOP/s", "this torch build has no oneDNN")
        ceilings[name] = max(values)
        sec.row(f"{name} ceiling (best path, {cores} threads)", round(ceilings[name], 1), "GFLOP/s")
    return sec, ceilings

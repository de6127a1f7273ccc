"""Where one sampling step's time goes, LSTM 2x512 on this CPU: the numbers behind the analysis of the
unmet sampling bars in benchmarks/README.md. About 30 seconds.

    python benchmarks/step_profile.py [--threads 1]

1. Matrix-vector bandwidth, fp32 `torch.mv`, on a matrix that fits the L3 (3 MB) and on ones that do
   not (12 MB: about what one fp32 step reads).
2. The three int8 products one step makes (fbgemm's dynamic-quantised linear, one row): W_hh0 512->2048,
   layer 1's [x, h] 1024->2048 and the head 512->321, each alone, against fp32 `addmm`.
3. Drawing one character: `torch.multinomial` against the same draw without its checks.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import best_time  # noqa: E402
from charrnn.quant import Int8Linear, int8_supported  # noqa: E402


def per_call(fn, number: int = 300, repeat: int = 5) -> float:
    """Microseconds per call: best of `repeat` runs of `number` calls."""
    return best_time(fn, repeat=repeat, number=number, warmup=20) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}")
    for mb in (3, 12, 48):
        w = torch.randn(int(mb * 2**20 / 4 / 512), 512)
        x = torch.randn(512)
        us = per_call(lambda: torch.mv(w, x), number=max(20, 600 // mb))
        print(f"fp32 mv, {mb:>2} MB matrix: {us:8.1f} us  {w.numel() * 4 / us / 1e3:5.1f} GB/s")
    for k, n, what in ((512, 2048, "W_hh0"), (1024, 2048, "layer 1 [x, h]"), (512, 321, "head")):
        w, b, x = torch.randn(n, k) * 0.05, torch.zeros(n), torch.randn(1, k)
        wt = w.T.contiguous()
        fp32 = per_call(lambda: torch.addmm(b, x, wt))
        line = f"{what:>15} {k}->{n}: fp32 addmm {fp32:7.1f} us ({k * n * 4 / fp32 / 1e3:4.1f} GB/s)"
        if int8_supported():
            q = Int8Linear(w, b)
            i8 = per_call(lambda: q(x))
            line += f"   int8 fbgemm {i8:7.1f} us ({k * n / i8 / 1e3:4.1f} GMAC/s)"
        print(line)
    probs = torch.rand(1, 65).softmax(-1)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        multi = per_call(lambda: torch.multinomial(probs, 1, generator=gen), number=2000)
        race = per_call(lambda: probs.div(torch.empty_like(probs).exponential_(generator=gen)).argmax(-1), number=2000)
    print(f"draw one of 65: torch.multinomial {multi:.1f} us, argmax(p / Exp(1)) {race:.1f} us")


if __name__ == "__main__":
    main()

"""minGRU and minLSTM against the LSTM they are meant to out-train: training and sampling speed.

    python -m benchmarks.minrnn            # about 3 minutes on 2 cores
    python -m benchmarks.minrnn --quick    # toy sizes, seconds

Training speed is `presets.measure_speed` (forward, backward and AdamW on random data: what the
budget rule times) at chunk length 256, batch 16, for each shape as LSTM, minGRU and minLSTM of the
same width and depth, in fp32 and, where the CPU has it natively, bf16; the three are timed in
turn, three rounds, and the median of each kept. Sampling speed is `Sampler.sample` for one stream
from fresh weights, with the step weights `--weights auto` picks: int8 for all three where fbgemm runs
(x86; the min-models' steps take int8 weights as the LSTM's do), fp32 elsewhere; the row records which.
Every figure is a ratio to the LSTM measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from charrnn.device import cpu_supports_bf16
from charrnn.families import build_model, model_config
from charrnn.presets import measure_speed
from charrnn.sampler import Sampler

from .common import machine

HERE = Path(__file__).resolve().parent
KINDS = ("lstm", "mingru", "minlstm")


def settings(kind: str, layers: int, hidden: int, seq_len: int) -> dict:
    return dict(model=kind, n_layers=layers, hidden=hidden, embed=128, dropout=0.0, batch_size=16, seq_len=seq_len,
                n_outputs=65)


def train_speeds(layers: int, hidden: int, precision: str, seq_len: int, seconds: float, rounds: int) -> dict:
    runs = {k: [] for k in KINDS}
    for _ in range(rounds):  # interleaved, so a slow spell of the machine hits every kind alike
        for kind in KINDS:
            runs[kind].append(measure_speed(settings(kind, layers, hidden, seq_len), 321, torch.device("cpu"),
                                            precision, seconds))
    return {k: statistics.median(v) for k, v in runs.items()}


def sample_speed(kind: str, layers: int, hidden: int, chars: int, tok) -> tuple[float, str]:
    torch.manual_seed(0)
    model = build_model(model_config(vocab_size=tok.vocab_size, **{k: v for k, v in settings(kind, layers, hidden, 1).items()
                                                                    if k not in ("batch_size", "seq_len")} |
                                    {"n_outputs": tok.n_chars}))
    sampler = Sampler(model, tok)
    sampler.sample(length=32, seed=0)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        sampler.sample(length=chars, seed=0)
        best = max(best, chars / (time.perf_counter() - t0))
    return best, sampler.weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.minrnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "minrnn.jsonl", help="results are appended here")
    args = p.parse_args(argv)
    from charrnn.tokenizer import CharTokenizer

    shapes = [(1, 64)] if args.quick else [(1, 512), (2, 512), (3, 384)]
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else [])
    seq_len, seconds, rounds = (32, 0.1, 1) if args.quick else (256, 2.0, 3)
    tok = CharTokenizer.from_chars("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    result = {"machine": machine(), "seq_len": seq_len, "batch": 16, "train": [], "sample": []}
    print(f"{result['machine']['cpu']}, bf16 native: {cpu_supports_bf16()}")
    for layers, hidden in shapes:
        for prec in precisions:
            s = train_speeds(layers, hidden, prec, seq_len, seconds, rounds)
            row = {"shape": f"{layers}x{hidden}", "precision": prec, **{k: round(v) for k, v in s.items()},
                   "mingru_ratio": round(s["mingru"] / s["lstm"], 2), "minlstm_ratio": round(s["minlstm"] / s["lstm"], 2)}
            result["train"].append(row)
            print(f"train {row['shape']} {prec}: lstm {s['lstm'] / 1e3:.1f}k, mingru {s['mingru'] / 1e3:.1f}k "
                  f"({row['mingru_ratio']}x), minlstm {s['minlstm'] / 1e3:.1f}k ({row['minlstm_ratio']}x) chars/s")
        speeds = {k: sample_speed(k, layers, hidden, 100 if args.quick else 2000, tok) for k in KINDS}
        row = {"shape": f"{layers}x{hidden}", **{k: round(v[0]) for k, v in speeds.items()},
               "weights": {k: v[1] for k, v in speeds.items()},
               "mingru_ratio": round(speeds["mingru"][0] / speeds["lstm"][0], 2)}
        result["sample"].append(row)
        print(f"sample 1 stream {row['shape']}: lstm ({speeds['lstm'][1]}) {row['lstm']:,}, mingru {row['mingru']:,} "
              f"({row['mingru_ratio']}x), minlstm {row['minlstm']:,} chars/s")
    if not args.quick:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

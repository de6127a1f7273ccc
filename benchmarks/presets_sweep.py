"""The sweep behind charrnn/presets.py: which settings learn tinyshakespeare best for a given number of
training characters.

A time budget is a character budget once the machine's speed is known, and the loss after N steps
does not depend on how fast the machine took them. So each experiment here is a step budget, and the
sweep can run anywhere: on a GPU it takes minutes, on a 2-core CPU hours.

    python benchmarks/presets_sweep.py --device cuda --workers 8 [NAME ...]

Each row trains with `charrnn.training.train` (fp32, TF32 off, so a GPU computes what a CPU would),
validates six times on the full validation split, and prints one JSON line with the best val loss;
the lines are appended to benchmarks/presets_sweep.jsonl. Needs the corpus: CHARRNN_CORPORA or a
download.

Each budget group is what one machine can train in one budget, in characters of the 1x512 LSTM at
batch 16 x 64: 0.45M is 60 s on a 2-core AMD EPYC (Zen 1) in fp32, 2.6M is 60 s on a CPU with
native bf16, 6.3M is 15 min on the EPYC. A model k times cheaper per character gets k times the
steps; the cost ratios were measured on the EPYC (`RATIO`).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Training speed relative to LSTM 1x512 (embed 128) at batch 16 x 64, fp32, on the 2-core EPYC.
RATIO = {(1, 256): 3.22, (1, 384): 1.76, (1, 512): 1.0, (2, 256): 1.61, (2, 384): 0.67, (2, 512): 0.43}


def _lstm(layers, hidden, dropout, batch, seq, lr):
    return dict(n_layers=layers, hidden=hidden, embed=128 if hidden >= 512 else 64, dropout=dropout,
                batch_size=batch, seq_len=seq, lr=lr)


EXPERIMENTS = [
    ("R1a", 0.45e6, _lstm(1, 256, 0.0, 16, 64, 1e-2)),
    ("R1b", 0.45e6, _lstm(1, 256, 0.0, 16, 64, 2e-2)),
    ("R1c", 0.45e6, _lstm(1, 384, 0.0, 16, 64, 8e-3)),
    ("R1d", 0.45e6, _lstm(1, 512, 0.0, 16, 64, 8e-3)),
    ("R1e", 0.45e6, _lstm(2, 256, 0.0, 16, 64, 8e-3)),
    ("R1f", 0.45e6, _lstm(1, 256, 0.0, 32, 32, 1e-2)),
    ("R2a", 2.6e6, _lstm(1, 512, 0.0, 16, 64, 8e-3)),
    ("R2b", 2.6e6, _lstm(1, 512, 0.0, 16, 64, 4e-3)),
    ("R2c", 2.6e6, _lstm(1, 384, 0.0, 16, 64, 8e-3)),
    ("R2d", 2.6e6, _lstm(2, 384, 0.1, 32, 64, 4e-3)),
    ("R2e", 2.6e6, _lstm(2, 512, 0.1, 32, 64, 4e-3)),
    ("R2f", 2.6e6, _lstm(1, 512, 0.1, 16, 64, 4e-3)),
    ("R3a", 6.3e6, _lstm(2, 512, 0.25, 32, 64, 4e-3)),
    ("R3b", 6.3e6, _lstm(2, 384, 0.2, 32, 64, 4e-3)),
    ("R3c", 6.3e6, _lstm(1, 512, 0.2, 16, 64, 6e-3)),
    ("R3d", 6.3e6, _lstm(2, 512, 0.1, 32, 64, 4e-3)),
    ("R3e", 6.3e6, _lstm(2, 384, 0.1, 32, 64, 5e-3)),
]


def steps_for(budget: float, s: dict) -> int:
    # 7% of a timed run goes to validation and start-up; the sweep gives the rest to training
    return int(budget * 0.93 * RATIO[(s["n_layers"], s["hidden"])] / (s["batch_size"] * s["seq_len"]))


def run(experiment: tuple, device: str, out: Path) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from charrnn.checkpoint import read_metrics
    from charrnn.training import RunOptions, train

    name, budget, s = experiment
    steps = steps_for(budget, s)
    settings = dict(model="lstm", warmup_steps=min(100, max(30, steps // 50)), max_steps=steps,
                    eval_interval=max(1, steps // 6), **s)
    t0 = time.time()
    summary = train(RunOptions(corpus="tinyshakespeare", out=out / name, device=device, precision="fp32",
                               quiet=True, sample_len=0), settings)
    vals = read_metrics(out / name, "val")
    return {"name": name, "budget_ref_chars": budget, "steps": steps, "chars": steps * s["batch_size"] * s["seq_len"],
            **s, "best_val": round(summary["best_val"], 4),
            "vals": [(v["step"], round(v["loss_nats"], 4)) for v in vals], "wall_s": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="experiments to run (default: all)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--workers", type=int, default=4, help="experiments run at once")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "sweep", help="where the run folders go")
    args = p.parse_args()
    todo = [e for e in EXPERIMENTS if not args.names or e[0] in args.names]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, e, args.device, args.out) for e in todo]
        for f in futures:
            row = f.result()
            print(json.dumps(row), flush=True)
            with open(HERE / "presets_sweep.jsonl", "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""The microscope's bars (`charrnn inspect`): the study note's lessons as numbers.

    python benchmarks/microscope.py [--copy-time 60s] [--python-time 5m] [--big-time 60s] [--out DIR]

1. Vanishing gradients. A synthetic copy task, built here: each line is a bit, 20 to 100 random letters,
   "=", and the same bit again, so the character after "=" depends on one seen 20-100 steps earlier.
   A plain RNN and an LSTM (1x128, the same settings) train for --copy-time each; then the gradient
   norm 50 characters back relative to 1 back (`microscope.gradients_through_time`, 64 positions of
   the validation text) for each, and the ratio of the two ratios (bar: the RNN's at least 10x smaller).
2. Interpretable cells. The installed interpreter's standard library, concatenated (.py files in
   a seeded shuffled order, up to 5 MB: built at run time, never stored), trained on with plain
   `charrnn train CORPUS --max-time 5m`; then `charrnn inspect` on 20,000 validation characters
   (bar: a unit with |r| >= 0.5 against a text feature).
3. Speed. A 2x512 LSTM trained for --big-time on the same text; the wall time of `charrnn inspect RUN
   --chars 20000` in its own process (bar: under 60 s).

Prints one JSON object and appends it to benchmarks/microscope.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine, python_sources  # noqa: E402
from charrnn import checkpoint as ck  # noqa: E402
from charrnn.data import encode_corpus, split  # noqa: E402
from charrnn.families import evaluate_model  # noqa: E402
from charrnn.microscope import gradients_through_time  # noqa: E402

COPY_SETTINGS = ["--layers", "1", "--hidden", "128", "--embed", "16", "--seq-len", "128", "--batch-size", "32",
                 "--dropout", "0", "--lr", "3e-3", "--warmup", "50", "--seed", "1"]


def copy_task(path: Path, n_chars: int = 1_000_000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines, size = [], 0
    while size < n_chars:
        bit = rng.choice("01")
        line = bit + "".join(rng.choice(letters) for _ in range(rng.randint(20, 100))) + "=" + bit + "\n"
        lines.append(line)
        size += len(line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def train(corpus: Path, out: Path, budget: str, extra: list[str]) -> None:
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out), "--max-time", budget,
                    "--quiet", *extra], check=True)


def vanishing(work: Path, budget: str) -> dict:
    corpus = copy_task(work / "copy.txt")
    out = {}
    for kind in ("rnn", "lstm"):
        run_dir = work / f"copy-{kind}"
        train(corpus, run_dir, budget, ["--model", kind, *COPY_SETTINGS])
        model, tok, ckpt, _ = ck.load_run(run_dir)
        val = np.asarray(split(encode_corpus(corpus, tok, None), ckpt.run.val_frac)[1])
        g, used = gradients_through_time(model, val, torch.device("cpu"), positions=64)
        # the loss on the answer bits (the character after "="): ln 2 = 0.693 is a guess
        losses = evaluate_model(model, val, torch.device("cpu"), per_char=True, n_streams=1).losses
        answers = np.flatnonzero(val[:-1] == tok.encode("=")[0])  # entry i predicts character i + 1
        out[kind] = {"ratio_50_1": g[49] / g[0], "g1": g[0], "g50": g[49], "positions": used,
                     "answer_loss_nats": float(losses[answers].mean()), "val_loss_nats": float(losses.mean()),
                     "steps": ckpt.step}
    out["lstm_over_rnn"] = out["lstm"]["ratio_50_1"] / out["rnn"]["ratio_50_1"]
    out["command"] = f"charrnn train copy.txt --max-time {budget} --model rnn|lstm {' '.join(COPY_SETTINGS)}"
    return out


def inspect(run_dir: Path, page: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "charrnn", "inspect", str(run_dir), "--chars", "20000", "--out",
                          str(page), "--json", "--quiet"], check=True, capture_output=True, text=True)
    return json.loads(res.stdout), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copy-time", default="60s")
    p.add_argument("--python-time", default="5m")
    p.add_argument("--big-time", default="60s")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "microscope")
    p.add_argument("--skip-copy", action="store_true", help="only the Python-source parts (2 and 3)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    if not args.skip_copy:
        result["vanishing"] = vanishing(args.out, args.copy_time)
        print(json.dumps(result["vanishing"]), flush=True)

    corpus = python_sources(args.out / "python-stdlib.txt")
    run_dir = args.out / "python-default"
    train(corpus, run_dir, args.python_time, [])
    summary, seconds = inspect(run_dir, args.out / "python-default.html")
    config = ck.read_config(run_dir)
    result["cells"] = {"command": f"charrnn train python-stdlib.txt --max-time {args.python_time}",
                       "model": config["model"], "best_units": summary["best_units"],
                       "best_abs_r": max(abs(b["r"]) for b in summary["best_units"]),
                       "loss_nats": summary["loss_nats"], "corpus_chars": len(corpus.read_text(encoding="utf-8")),
                       "gradient_ratio_50": summary["gradient_ratio_50"]}
    print(json.dumps(result["cells"]), flush=True)

    big = args.out / "python-2x512"
    train(corpus, big, args.big_time, ["--layers", "2", "--hidden", "512"])
    summary, seconds = inspect(big, args.out / "python-2x512.html")
    result["speed"] = {"command": "charrnn inspect RUN --chars 20000 (2x512 LSTM)", "wall_s": seconds,
                       "chars": summary["chars"]}
    print(json.dumps(result["speed"]), flush=True)
    with open(HERE / "microscope.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

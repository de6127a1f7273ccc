"""Byte fallback costs nothing: the default vocabulary (corpus characters plus 256 byte tokens, read but never
predicted) against `--no-byte-fallback`, at equal steps, same seed, same settings.

    python benchmarks/byte_fallback.py [--steps 2438] [--corpus tinyshakespeare]

The settings are those of ../shared/bench/lstm_reference.py (LSTM 1x512, batch 16 x 64, lr 4e-3), pinned so
that no preset timing can pick different ones for the two runs. Each run is scored with `charrnn eval
--json` on its best checkpoint. Bar: the two validation losses within 0.005 nats. Prints one JSON line and
appends it to benchmarks/byte_fallback.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine  # noqa: E402
from charrnn.checkpoint import read_config  # noqa: E402

SETTINGS = ["--layers", "1", "--hidden", "512", "--embed", "64", "--batch-size", "16", "--seq-len", "64",
            "--lr", "4e-3", "--weight-decay", "0.01", "--dropout", "0", "--warmup", "50", "--seed", "1337"]


def run(corpus: str, out: Path, steps: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charrnn", "train", corpus, "--out", str(out), "--max-steps", str(steps),
                    "--quiet", *SETTINGS, *extra], check=True)
    wall = time.perf_counter() - t0
    scored = json.loads(subprocess.run([sys.executable, "-m", "charrnn", "eval", str(out), corpus, "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    config = read_config(out)
    return {"val_loss_nats": scored["loss_nats"], "wall_s": round(wall, 1), "params": config["params"],
            "vocab_size": config["model"]["vocab_size"], "outputs": config["model"].get("n_outputs")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2438)
    p.add_argument("--corpus", default="tinyshakespeare")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "byte-fallback")
    args = p.parse_args()
    rows = {"default": run(args.corpus, args.out / "default", args.steps, []),
            "no_byte_fallback": run(args.corpus, args.out / "no-byte-fallback", args.steps, ["--no-byte-fallback"])}
    diff = rows["default"]["val_loss_nats"] - rows["no_byte_fallback"]["val_loss_nats"]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "steps": args.steps, "corpus": args.corpus,
              "command": f"charrnn train {args.corpus} --max-steps {args.steps} {' '.join(SETTINGS)} [--no-byte-fallback]",
              **rows, "difference_nats": diff, "bar_met": abs(diff) <= 0.005}
    print(json.dumps(result), flush=True)
    with open(HERE / "byte_fallback.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

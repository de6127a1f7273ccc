"""Data-parallel throughput: the same training run on 1 process and under torchrun on N processes.

    python benchmarks/distributed.py [--config 1 --config 1:1 --config 2] [--steps 150] [--repeat 1] [-- train args]

Each configuration NPROC[:THREADS] trains tinyshakespeare for --steps optimizer steps at the same
global batch (default: LSTM 1x512, 16 streams x 64 characters, dropout 0, lr 8e-3) with
OMP_NUM_THREADS=THREADS per process (default: cores / NPROC):

- NPROC 1: plain `charrnn train`, the reference,
- NPROC > 1: `torchrun --standalone --nproc_per_node=NPROC -m charrnn train ...`.

The defaults compare one process on all cores, one process on one core, and one process per core.

Configurations alternate within each repeat, so a background load slows them alike. Throughput is
global characters per second of training (evaluation excluded), from the run's metrics; the final
training loss is printed too, since a data-parallel run must follow the single-process one. One
JSON line per run goes to stdout and to benchmarks/distributed.jsonl. Needs the corpus: set
CHARRNN_CORPORA (the Makefile points it at ../shared/corpora) or let it download once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from charrnn.checkpoint import read_config, read_metrics  # noqa: E402

SETTINGS = ["--model", "lstm", "--layers", "1", "--hidden", "512", "--embed", "128", "--dropout", "0",
            "--batch-size", "16", "--seq-len", "64", "--lr", "8e-3", "--warmup", "30", "--precision", "fp32",
            "--device", "cpu", "--sample-len", "0", "--quiet"]


def run(config: str, steps: int, out: Path, extra: list[str]) -> dict:
    nproc, _, threads = config.partition(":")
    nproc = int(nproc)
    threads = int(threads) if threads else max(1, (os.cpu_count() or 1) // nproc)
    run_dir = out / f"tinyshakespeare-x{nproc}-t{threads}"
    shutil.rmtree(run_dir, ignore_errors=True)
    train = ["train", "tinyshakespeare", "--max-steps", str(steps), "--eval-interval", str(steps + 1),
             "--out", str(run_dir), *SETTINGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if nproc == 1:
        cmd, label = [sys.executable, "-m", "charrnn", *train], f"1 process, {threads} thread(s)"
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "charrnn", *train]
        label = f"torchrun x{nproc}, {threads} thread(s) each"
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    records = read_metrics(run_dir)
    last = [r for r in records if r["kind"] == "train"][-1]
    config = read_config(run_dir)
    chars = last["step"] * config["train"]["batch_size"] * config["train"]["seq_len"]
    return {
        "config": label,
        "command": " ".join([f"OMP_NUM_THREADS={threads}"] + (["charrnn"] if nproc == 1 else [
            "torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "charrnn"]) + train),
        "processes": nproc,
        "omp_threads_each": threads,
        "steps": last["step"],
        "global_batch": config["train"]["batch_size"],
        "chars_per_s": round(chars / last["elapsed"]),
        "final_train_loss": round(last["loss"], 5),
        "val_loss": round([r for r in records if r["kind"] == "val"][-1]["loss_nats"], 5),
        "wall_s": round(wall, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", help="NPROC[:THREADS] to compare (repeatable) [1, 1:1, 2]")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all configurations")
    p.add_argument("--out", type=Path, default=HERE / "runs", help="where the run folders go")
    p.add_argument("extra", nargs="*", help="extra `charrnn train` arguments, after --")
    args = p.parse_args()
    for _ in range(args.repeat):
        for config in args.config or ["1", "1:1", "2"]:
            row = run(config, args.steps, args.out, args.extra)
            print(json.dumps(row), flush=True)
            with open(HERE / "distributed.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

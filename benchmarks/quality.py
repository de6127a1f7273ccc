"""Quality bar: train on tinyshakespeare under a time budget with the plain CLI, then score the best
checkpoint on the validation split with `charrnn eval`.

    python benchmarks/quality.py --budget 60s --budget 15m [--out benchmarks/runs] [-- extra train args]

Each budget runs `charrnn train tinyshakespeare --max-time T` in a child process (so its peak RSS is
its own), then `charrnn eval RUN tinyshakespeare --json`. Prints one JSON line per budget and appends
it to benchmarks/quality.jsonl. Needs the corpus: set CHARRNN_CORPORA (the Makefile points it at
../shared/corpora) or let it download once.
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
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from charrnn.device import cpu_name  # noqa: E402


def run_budget(budget: str, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"tinyshakespeare-{budget}"
    shutil.rmtree(run_dir, ignore_errors=True)
    train_cmd = [sys.executable, "-m", "charrnn", "train", "tinyshakespeare", "--max-time", budget,
                 "--out", str(run_dir), "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(train_cmd)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {' '.join(train_cmd)}")
    eval_cmd = [sys.executable, "-m", "charrnn", "eval", str(run_dir), "tinyshakespeare", "--json"]
    result = json.loads(subprocess.run(eval_cmd, check=True, capture_output=True, text=True).stdout)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "budget": budget,
        "command": " ".join(["charrnn", "train", "tinyshakespeare", "--max-time", budget, *extra]),
        "val_loss_nats": round(result["loss_nats"], 4),
        "val_bpc": round(result["bpc"], 4),
        "best_val_during_training": round(min(r["loss_nats"] for r in records if r["kind"] == "val"), 4),
        "steps": train[-1]["step"],
        "chars_per_s": round(train[-1]["step"] * config["train"]["batch_size"] * config["train"]["seq_len"]
                             / train[-1]["elapsed"]),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "preset": config["run"].get("preset"),
        "model": config["model"],
        "train": {k: config["train"][k] for k in ("batch_size", "seq_len", "lr", "warmup_steps", "weight_decay")},
        "params": config["params"],
        "precision": config["precision"],
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {cpu_name()}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", action="append", help="time budget, e.g. 60s or 15m (repeatable)")
    p.add_argument("--out", type=Path, default=HERE / "runs", help="where the run folders go")
    p.add_argument("extra", nargs="*", help="extra `charrnn train` arguments, after --")
    args = p.parse_args()
    for budget in args.budget or ["60s", "15m"]:
        row = run_budget(budget, args.out, args.extra)
        print(json.dumps(row), flush=True)
        with open(HERE / "quality.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

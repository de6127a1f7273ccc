"""The defaults against a plain PyTorch loop: `charrnn train CORPUS --max-time T`, no other setting,
beside the yardstick `../shared/bench/lstm_reference.py CORPUS --seconds T`, same machine, same run.

    python benchmarks/quality.py [--budget 60s --budget 5m] [--corpus tinyshakespeare --corpus python]
                                 [--precision fp32] [--isa avx2] [--out benchmarks/runs/quality]

For each corpus and budget, one after the other in child processes (nothing else running): the
reference loop (it prints its validation loss), then `charrnn train CORPUS --max-time T` and
`charrnn eval RUN CORPUS --json` (every validation character once, fp32, the reference's method and
split: the last 10 %). Prints the two losses and ours minus the reference (bar: <= -0.02 nats), one
JSON line each, appended to benchmarks/quality.jsonl.

Corpora: `tinyshakespeare` (CHARRNN_CORPORA, which the Makefile points at ../shared/corpora), and
`python`: 5 MB of the installed interpreter's standard library, built at run time
(benchmarks.common.python_sources), never stored; `c`: 3 MB of the system's C headers, built the same
way (held out: the defaults were not tuned on it). `--precision fp32` trains both in fp32, as on a
CPU without native bf16 (a stand-in measured on this CPU; a real one is slower as well). `--isa avx2`
goes further: both loops run with torch's, oneDNN's and MKL's kernels held to AVX2 (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS) and in fp32, what they run on an AVX2-only CPU such as a
Zen 1 EPYC; the balance between matrix products and the rest then shifts as it does there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from benchmarks.common import ISA_ENV, bench_corpus, emulate_isa, machine, train_and_score  # noqa: E402
from charrnn.units import parse_duration  # noqa: E402

REFERENCE = HERE.parent.parent / "shared" / "bench" / "lstm_reference.py"
BAR = -0.02  # ours minus the reference, nats


def reference(script: Path, corpus: Path, seconds: float, precision: str | None) -> dict:
    cmd = [sys.executable, str(script), str(corpus), "--seconds", f"{seconds:g}"]
    if precision:
        cmd += ["--precision", precision]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", action="append", help="time budget, e.g. 60s or 5m (repeatable)")
    p.add_argument("--corpus", action="append", help="tinyshakespeare, python, c, or a path (repeatable)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="both loops (default: each its own auto)")
    p.add_argument("--isa", choices=sorted(ISA_ENV), help="hold both loops' kernels to this ISA, in fp32")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "quality")
    p.add_argument("--reference", type=Path, default=REFERENCE, help="the yardstick's path")
    args = p.parse_args()
    if not args.reference.is_file():
        raise SystemExit(f"the reference loop is not at {args.reference}")
    args.out.mkdir(parents=True, exist_ok=True)
    where = machine()
    if args.isa:
        if args.precision == "bf16":
            raise SystemExit("--isa avx2 stands for a CPU without native bf16: leave --precision out or give fp32")
        args.precision = "fp32"  # what --precision auto picks on such a CPU
        emulate_isa(args.isa, where)
    for name in args.corpus or ["tinyshakespeare", "python"]:
        corpus = bench_corpus(name, args.out)
        for budget in args.budget or ["60s", "5m"]:
            ref = reference(args.reference, corpus, parse_duration(budget), args.precision)
            mine = train_and_score(corpus, budget, args.out / f"{Path(name).stem}-{budget}",
                                   ["--precision", args.precision] if args.precision else [])
            row = {"corpus": name, "corpus_chars": len(corpus.read_text(encoding="utf-8")), "budget": budget,
                   "reference_val_loss": ref["val_loss"], "ours_val_loss": round(mine["val_loss"], 4),
                   "difference": round(mine["val_loss"] - ref["val_loss"], 4),
                   "meets_bar": mine["val_loss"] - ref["val_loss"] <= BAR,
                   "reference": {k: ref[k] for k in ("steps", "chars_per_s", "epochs", "bf16")}, "ours": mine,
                   "machine": where, "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            with open(HERE / "quality.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""The defaults against a plain PyTorch loop: `charrnn train CORPUS --max-time T`, no other setting,
beside the yardstick `../shared/bench/lstm_reference.py CORPUS --seconds S`, same machine, same run.

    python benchmarks/quality.py [--budget 60s --budget 5m] [--corpus tinyshakespeare --corpus python]
                                 [--runs 3] [--precision fp32] [--isa avx2] [--out benchmarks/runs/quality]

Like with like:
- the same wall clock: our command's --max-time T bounds the whole command (setup, validation, the final
  pass and the checkpoints included). The reference trains for S seconds and then sets up and scores
  around that; its overhead (its whole command's time minus S) is measured first with a short run, and
  S = T - overhead, so both commands take about T seconds. Each row records both wall times, measured
  around the whole command.
- the same estimator: the reference's validation pass (32 contiguous streams, state carried, fp32, the
  last 10 %) is `charrnn eval`'s method; ours is scored with `charrnn eval` on best.pt (chosen by the
  run's validations, which score the first 8,192 characters of that same split) and on last.pt (the
  model at its last step, as the reference is scored), both reported.
- noise: `--runs` runs of each (default 3), alternating reference and ours, each row appended to
  benchmarks/quality.jsonl; then one summary row per corpus and budget with the medians and spreads and
  the difference of the medians (bar: <= -0.02 nats, on best.pt and on last.pt).

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

from benchmarks.common import (ISA_ENV, bench_corpus, command_line, emulate_isa, machine, record,  # noqa: E402
                               spread, train_and_score)
from charrnn.units import parse_duration  # noqa: E402

REFERENCE = HERE.parent.parent / "shared" / "bench" / "lstm_reference.py"
BAR = -0.02  # ours minus the reference, nats


def reference(script: Path, corpus: Path, seconds: float, precision: str | None) -> dict:
    """The yardstick's JSON line, and the wall time of its whole command."""
    cmd = [sys.executable, str(script), str(corpus), "--seconds", f"{seconds:g}"]
    if precision:
        cmd += ["--precision", precision]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t0}


def score_last(run_dir: Path, corpus: Path) -> float:
    """`charrnn eval` of the run's last.pt (best.pt is what train_and_score scores)."""
    out = subprocess.run([sys.executable, "-m", "charrnn", "eval", str(run_dir / "last.pt"), str(corpus), "--json"],
                         check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    return json.loads(out)["loss_nats"]


def write(row: dict) -> None:
    record(HERE / "quality.jsonl", row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", action="append", help="time budget, e.g. 60s or 5m (repeatable)")
    p.add_argument("--corpus", action="append", help="tinyshakespeare, python, c, or a path (repeatable)")
    p.add_argument("--runs", type=int, default=3, help="runs of each, alternating (at least 3 for a claim)")
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
    about = {"precision": args.precision or "auto", "command": command_line("python benchmarks/quality.py")}
    for name in args.corpus or ["tinyshakespeare", "python"]:
        corpus = bench_corpus(name, args.out)
        short = reference(args.reference, corpus, 2.0, args.precision)
        overhead = short["wall_s"] - short["train_s"]  # starting, reading the corpus, scoring: around the training
        for budget in args.budget or ["60s", "5m"]:
            seconds = parse_duration(budget)
            rows = []
            for i in range(args.runs):
                ref = reference(args.reference, corpus, max(1.0, seconds - overhead), args.precision)
                run_dir = args.out / f"{Path(name).stem}-{budget}"
                mine = train_and_score(corpus, budget, run_dir, ["--precision", args.precision] if args.precision else [])
                last = score_last(run_dir, corpus)
                row = {"corpus": name, "corpus_chars": len(corpus.read_text(encoding="utf-8")), "budget": budget,
                       "run": i + 1, "reference_val_loss": ref["val_loss"], "reference_wall_s": round(ref["wall_s"], 1),
                       "reference_train_s": ref["train_s"], "ours_best_val_loss": round(mine["val_loss"], 4),
                       "ours_last_val_loss": round(last, 4), "ours_wall_s": round(mine["wall_s"], 1),
                       "reference": {k: ref[k] for k in ("steps", "chars_per_s", "epochs", "bf16")}, "ours": mine,
                       **about, "machine": where, "date": time.strftime("%Y-%m-%d")}
                write(row)
                rows.append(row)
            ref_m = spread([r["reference_val_loss"] for r in rows])
            best_m, last_m = (spread([r[k] for r in rows]) for k in ("ours_best_val_loss", "ours_last_val_loss"))
            write({"summary": True, "corpus": name, "budget": budget, "runs": len(rows), "reference": ref_m,
                   "ours_best": best_m, "ours_last": last_m,
                   "difference_best": round(best_m["median"] - ref_m["median"], 4),
                   "difference_last": round(last_m["median"] - ref_m["median"], 4),
                   "meets_bar": best_m["median"] - ref_m["median"] <= BAR and last_m["median"] - ref_m["median"] <= BAR,
                   "wall_s": {"reference": spread([r["reference_wall_s"] for r in rows]),
                              "ours": spread([r["ours_wall_s"] for r in rows])},
                   **about, "machine": where, "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()

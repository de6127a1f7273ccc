"""The speed suite, in one run: matmul ceilings, training, sampling, encoding, memory.

    python -m benchmarks                 # everything, about 8 minutes on 2 cores; writes benchmarks/results.json
                                         # and appends the run to benchmarks/speed.jsonl
    python -m benchmarks --quick         # the same code on toy sizes, in seconds (what the tests run)
    python -m benchmarks --only sampling --run checkpoints/tinyshakespeare-lstm

Prints one table per section and the bars with their targets, and writes every number (with the
timings behind it) to the JSON file. A run at full size is also appended, as one line with the machine
and the date, to benchmarks/speed.jsonl, the committed record benchmarks/README.md's current results are
generated from (`python -m benchmarks.summary`); a --quick run, whose toy sizes mean nothing, is not. A
row that cannot be measured on this machine (bf16 without native bf16, say) says so and carries no number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from charrnn.fileio import append_line

HERE = Path(__file__).resolve().parent
SECTIONS = ("ceiling", "training", "sampling", "encoding", "memory")


def _print_section(sec) -> None:
    print(f"\n== {sec.name} ({sec.seconds:.0f} s) ==")
    width = max([len(r.name) for r in sec.rows] + [10])
    for r in sec.rows:
        value = "-" if r.value is None else f"{r.value:,}"
        print(f"  {r.name:<{width}}  {value:>12} {r.unit:<10} {r.note}")


def _print_bars(sections) -> None:
    print("\n== bars ==")
    for sec in sections:
        for b in sec.bars:
            verdict = {True: "MET", False: "NOT MET", None: "n/a"}[b.met]
            value = "-" if b.measured is None else f"{b.measured:,}"
            print(f"  [{verdict:^7}] {b.name}: {value} (target {b.target}){'  ' + b.note if b.note else ''}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the suite works, in seconds")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--out", type=Path, default=HERE / "results.json", help="where the JSON results go")
    p.add_argument("--record", type=Path, default=HERE / "speed.jsonl",
                   help="the run is appended here as one line (not with --quick)")
    p.add_argument("--no-record", action="store_true", help="write --out only")
    p.add_argument("--run", type=Path, help="a trained run to measure int8 sampling fidelity on "
                                            "(default: train an LSTM 2x512 for a minute)")
    p.add_argument("--models", default="lstm,gru,rnn", help="models for the training section (comma-separated)")
    p.add_argument("--device", default="cpu", help="where training and sampling throughput run: cpu or cuda")
    p.add_argument("--threads", type=int, help="torch intra-op threads for everything (default: torch's own choice)")
    p.add_argument("--corpus", help="the corpus for the fidelity run (default: the run's own, or tinyshakespeare "
                                    "when $CHARRNN_CORPORA holds it, else generated text)")
    args = p.parse_args(argv)

    import torch

    from . import ceiling, common, encoding, memory, sampling, training

    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = args.corpus
    local = Path(os.environ.get("CHARRNN_CORPORA", "/nonexistent")) / "tinyshakespeare.txt"
    if corpus is None and args.run is None and local.is_file() and not args.quick:
        corpus = "tinyshakespeare"
    wanted = args.only or SECTIONS
    started = datetime.now(timezone.utc)
    results = {"machine": common.machine(), "quick": args.quick, "date": started.strftime("%Y-%m-%d"),
               "started": started.isoformat(timespec="seconds"),
               "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
               "sections": {}}
    print(f"machine: {json.dumps(results['machine'])}")
    sections = []
    t_all = time.perf_counter()
    # The ceiling is measured whenever training or sampling is, since they are expressed against it.
    ceilings: dict = {}
    for name in SECTIONS:
        if name not in wanted and not (name == "ceiling" and {"training", "sampling"} & set(wanted)):
            continue
        t0 = time.perf_counter()
        if name == "ceiling":
            sec, ceilings = ceiling.measure(args.quick)
        elif name == "training":
            sec = training.measure(ceilings, args.quick, kinds=tuple(args.models.split(",")),
                                   device=args.device)
        elif name == "sampling":
            sec = sampling.measure(ceilings, args.quick, run=args.run, corpus=corpus, device=args.device)
        elif name == "encoding":
            sec = encoding.measure(args.quick)
        else:
            sec = memory.measure(args.quick)
        sec.seconds = time.perf_counter() - t0
        if args.quick:  # toy sizes say nothing about the targets
            for b in sec.bars:
                b.met, b.note = None, "--quick: toy sizes, not judged"
        sections.append(sec)
        results["sections"][name] = sec.to_dict()
        _print_section(sec)
        sys.stdout.flush()
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    _print_bars(sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\n{results['seconds']:.0f} s; results in {args.out}")
    if not (args.quick or args.no_record):  # toy sizes are no record
        append_line(args.record, json.dumps(results))
        print(f"appended to {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The timed sweep behind the settings rule (`presets.choose`, `presets.dropout_for`): plain
`charrnn train CORPUS --max-time T [settings]` runs, one after another, each scored by `charrnn eval`
on its best checkpoint.

    python benchmarks/budget_sweep.py [--group 60s-tinyshakespeare ...] [--isa avx2]
                                      [--out benchmarks/runs/budget-sweep]

Each group is one corpus and budget: the default (the rule's choice) and the alternatives it was
measured against. Corpora: tinyshakespeare (CHARRNN_CORPORA), and 5, 10 and 50 MB of the installed
interpreter's standard library (`benchmarks.common.python_sources`, built at run time, never stored).
Timed runs: run nothing else meanwhile. Appends one JSON line per run to benchmarks/budget_sweep.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from benchmarks.common import ISA_ENV, bench_corpus, emulate_isa, machine, train_and_score  # noqa: E402

LSTM = ["--layers", "1", "--embed", "64", "--batch-size", "16", "--seq-len", "64", "--warmup", "30", "--dropout", "0"]
LARGE = [*LSTM, "--hidden", "512", "--embed", "128", "--lr", "6e-3", "--warmup", "50"]  # the large preset, dropout 0
XLARGE = ["--layers", "2", "--hidden", "512", "--embed", "128", "--batch-size", "32", "--seq-len", "128",
          "--lr", "4e-3", "--warmup", "100"]  # the xlarge preset's shape, dropout from the rule
GROUPS: dict[str, tuple[str, str, list[list[str]]]] = {
    "60s-tinyshakespeare": ("tinyshakespeare", "60s", [
        [],
        [*LSTM, "--hidden", "384", "--lr", "1.2e-2"],
        [*LSTM, "--hidden", "384", "--lr", "8e-3", "--batch-size", "32"],
        [*LSTM, "--hidden", "384", "--lr", "8e-3", "--seq-len", "32"],
        [*LSTM, "--model", "gru", "--hidden", "384", "--lr", "8e-3"],
        [*LSTM, "--hidden", "512", "--lr", "4e-3"],
        [*LSTM, "--hidden", "512", "--lr", "6e-3", "--batch-size", "32"],
    ]),
    "5m-tinyshakespeare": ("tinyshakespeare", "5m", [[], ["--dropout", "0.3"]]),
    "5m-python5": ("python-5mb", "5m", [[], ["--dropout", "0.1"]]),
    "15m-tinyshakespeare": ("tinyshakespeare", "15m", [
        [],
        XLARGE,
    ]),
    # On a fast CPU (bf16 AMX) 15 minutes read tinyshakespeare 40 times with a 1x512: two layers, held back harder
    "15m-tinyshakespeare-deep": ("tinyshakespeare", "15m", [XLARGE, [*XLARGE, "--dropout", "0.4"]]),
    "15m-tinyshakespeare-rule": ("tinyshakespeare", "15m", [[], [*XLARGE, "--dropout", "0.5"]]),
    "5m-python50": ("python-50mb", "5m", [[], XLARGE]),
    "30s-tinyshakespeare": ("tinyshakespeare", "30s", [[], [*LSTM, "--hidden", "384", "--lr", "8e-3"]]),
    "5m-python10": ("python-10mb", "5m", [[], XLARGE]),
    "30m-python50": ("python-50mb", "30m", [[], LARGE]),
    "30m-tinyshakespeare": ("tinyshakespeare", "30m", [[]]),
    "30m-tinyshakespeare-large": ("tinyshakespeare", "30m", [[*LARGE, "--dropout", "0.5"]]),
    # DropConnect on W_hh at 30 epochs: the rule (weight drop 0.25, dropout 0.3) against none, and the
    # same or more of it beside more dropout
    "15m-tinyshakespeare-weight-drop": ("tinyshakespeare", "15m", [
        [], ["--weight-drop", "0", "--dropout", "0.5"], ["--dropout", "0.4"], ["--dropout", "0.5"],
        ["--weight-drop", "0.35", "--dropout", "0.5"]]),
    # a fast hour of the Xeon, where 60 s buy tinyshakespeare 4-5 times
    "60s-tinyshakespeare-fast": ("tinyshakespeare", "60s", [
        [], ["--weight-drop", "0"], ["--dropout", "0", "--weight-drop", "0"], LARGE]),
    # the same hour after dropout's mask became a window into a pool (models.pooled_mask): what the
    # default's neighbours in rate, batch, width and chunk length score now dropout costs no steps
    "60s-tinyshakespeare-pooled": ("tinyshakespeare", "60s", [
        [], ["--dropout", "0", "--weight-drop", "0"], ["--dropout", "0.1"], ["--lr", "1.2e-2"],
        ["--lr", "1.2e-2", "--batch-size", "32"], ["--hidden", "448"], ["--seq-len", "128"]]),
    # the 15-minute bar (<= 1.37) with the default alone
    "15m-tinyshakespeare-default": ("tinyshakespeare", "15m", [[]]),
    # the medium preset's rate under the later dropout onset (presets.dropout_for: none below 6 epochs)
    "60s-tinyshakespeare-rate": ("tinyshakespeare", "60s", [[], ["--lr", "1.2e-2"], ["--lr", "1.6e-2"]]),
    "60s-python5-rate": ("python-5mb", "60s", [[], ["--lr", "1.2e-2"]]),
    # 5 minutes of 5 MB (about one epoch) where a CPU runs a third as fast (run with --isa avx2): the
    # large preset, chosen just above its threshold, against the medium and a wider batch
    "5m-python5-slow": ("python-5mb", "5m", [
        [], [*LSTM, "--hidden", "384", "--lr", "8e-3"], [*LARGE, "--batch-size", "32", "--lr", "8e-3"]]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", action="append", choices=sorted(GROUPS), help="default: all (about three hours)")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "budget-sweep")
    p.add_argument("--isa", choices=sorted(ISA_ENV), help="hold the runs' kernels to this ISA, in fp32")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    where = machine()
    precision = []
    if args.isa:
        emulate_isa(args.isa, where)
        precision = ["--precision", "fp32"]  # what --precision auto picks on such a CPU
    for group in args.group or list(GROUPS):
        name, budget, variants = GROUPS[group]
        corpus = bench_corpus(name, args.out)
        for i, settings in enumerate(variants):
            row = {"group": group, "corpus": name, "budget": budget,
                   **train_and_score(corpus, budget, args.out / f"{group}-{i}", [*settings, *precision]),
                   "command": " ".join(["charrnn", "train", name, "--max-time", budget, *settings, *precision]),
                   "machine": where, "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            with open(HERE / "budget_sweep.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

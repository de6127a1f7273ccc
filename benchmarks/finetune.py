"""Fine-tuning against training from scratch, on the same new text for the same time:

    python benchmarks/finetune.py [--base-time 2m] [--budget 60s] [--runs 3] [--out benchmarks/runs/finetune]

1. A base model: `charrnn train tinyshakespeare --max-time BASE` (once; its time is not part of the race).
2. The new text: about 200 KB of the licence texts every Debian system has (/usr/share/common-licenses,
   the regular files in name order, joined, cut at 200,000 characters), built here at run time and never
   stored; its size and sha256 are in every row.
3. `--runs` times, alternating which goes first: `charrnn train licenses.txt --init-from BASE --max-time
   BUDGET` and `charrnn train licenses.txt --max-time BUDGET`, the same wall clock around each whole
   command, each scored by `charrnn eval RUN licenses.txt` (the same estimator: a full pass over the same
   validation split, the last 10 %). The fine-tuned model reads the base's vocabulary with the new
   text's characters added; the scratch model the new text's alone (a smaller output layer, if anything
   an advantage).

Rows go to benchmarks/finetune.jsonl: one per run, then a summary with the medians and their difference
(bar: the fine-tuned median below the scratch median).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from benchmarks.common import command_line, machine, record, spread, train_and_score  # noqa: E402
from charrnn.corpora import resolve_corpus  # noqa: E402

LICENSES = Path("/usr/share/common-licenses")
NEW_TEXT_CHARS = 200_000


def licence_text(path: Path, limit: int = NEW_TEXT_CHARS) -> Path:
    """The new text (see the module's docstring), written to `path`."""
    files = sorted(p for p in LICENSES.iterdir() if p.is_file() and not p.is_symlink())
    if not files:
        raise SystemExit(f"no licence texts in {LICENSES}: give another text with --text")
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    path.write_text(text[:limit], encoding="utf-8")
    return path


def write(row: dict) -> None:
    record(HERE / "finetune.jsonl", row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-time", default="2m", help="the base model's training time on tinyshakespeare")
    p.add_argument("--budget", default="60s", help="each new-text run's time, the whole command")
    p.add_argument("--runs", type=int, default=3, help="runs of each, alternating (at least 3 for a claim)")
    p.add_argument("--text", type=Path, help="the new text (default: the licence texts, built at run time)")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "finetune")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    where = machine()
    text = args.text or licence_text(args.out / "licenses.txt")
    data = text.read_bytes()
    about_text = {"text": text.name if args.text else "common-licenses", "text_chars": len(data.decode("utf-8")),
                  "text_sha256": hashlib.sha256(data).hexdigest()}
    base_dir = args.out / "base"
    base = train_and_score(resolve_corpus("tinyshakespeare"), args.base_time, base_dir, [])
    about_base = {"base_time": args.base_time, "base_val_loss_tinyshakespeare": round(base["val_loss"], 4),
                  "base_model": base["model"], "base_steps": base["steps"]}
    rows = []
    for i in range(args.runs):
        order = ("finetune", "scratch") if i % 2 == 0 else ("scratch", "finetune")
        for kind in order:
            settings = ["--init-from", str(base_dir)] if kind == "finetune" else []
            run = train_and_score(text, args.budget, args.out / kind, settings)
            row = {"kind": kind, "run": i + 1, "budget": args.budget, "val_loss": round(run["val_loss"], 4),
                   "wall_s": round(run["wall_s"], 1), "steps": run["steps"], "epochs": run["epochs"],
                   "params": run["params"], "preset": run["preset"], "precision": run["precision"],
                   "command": run["command"], **about_text, **about_base, "machine": where,
                   "date": time.strftime("%Y-%m-%d")}
            write(row)
            rows.append(row)
    fine, scratch = (spread([r["val_loss"] for r in rows if r["kind"] == k]) for k in ("finetune", "scratch"))
    write({"summary": True, "budget": args.budget, "runs": args.runs, "finetune": fine, "scratch": scratch,
           "difference": round(fine["median"] - scratch["median"], 4), "meets_bar": fine["median"] < scratch["median"],
           "wall_s": {k: spread([r["wall_s"] for r in rows if r["kind"] == k]) for k in ("finetune", "scratch")},
           **about_text, **about_base, "command": command_line("python benchmarks/finetune.py"), "machine": where,
           "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()

"""Items (issue 31): how fast `charrnn sample RUN --items 1000 --new` finds 1,000 new items, and what deciding
membership costs for 100,000 items against a 50 MB corpus.

    python benchmarks/items.py [--run RUN] [--train-time 90s] [--items 1000] [--membership-mb 50] [--write]

The list corpus is made on this machine at run time, never stored: the words of /usr/share/dict/words
when there is one, else the names of the files under the interpreter's prefixes (sys.prefix and
sys.base_prefix: the installed packages' modules, data and headers), one distinct name per line in a
seeded order. Unless --run names a run, a 1x512 LSTM is trained on it for --train-time (settings pinned,
as ../shared/bench/lstm_reference.py's: no preset timing). Then:

- items: `charrnn sample RUN --items N --new --seed 0` as a whole process (interpreter start, imports,
  loading, reading the corpus's lines, sampling), and `Sampler.items(N, new=True)` in this process; the
  items are checked (N distinct, none a line of the corpus, read here the plain way). Reference, in the
  same run: `Sampler.sample_many` making as many characters in as many streams (plain batched
  sampling), so the ratio is what finding whole, new lines costs over sampling the same text.
- membership: a 50 MB list corpus (pairs of those names, one per line), a run trained for one step on it
  (so that its id cache is the one `--new` reads), then `Sampler.corpus_lines()` (decoding the cached
  ids and building the two line sets), 100,000 lookups (half of them corpus lines, half not), and the
  resident memory the sets take. Reference: reading the 50 MB file as text (`data.read_text`).

Prints one JSON object; with --write, appends it to benchmarks/items.jsonl. Bars: the command under 5 s
with 1,000 distinct new items. Timings on a loaded machine mean nothing (benchmarks/README.md).
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
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine  # noqa: E402
from charrnn.analysis import run_info  # noqa: E402
from charrnn.data import read_text  # noqa: E402
from charrnn.sampler import SampleConfig, Sampler, default_streams  # noqa: E402

SETTINGS = ["--model", "lstm", "--layers", "1", "--hidden", "512", "--embed", "64", "--batch-size", "16",
            "--seq-len", "64", "--lr", "4e-3", "--weight-decay", "0.01", "--dropout", "0", "--warmup", "50",
            "--seed", "1337"]
TINY = ["--model", "lstm", "--layers", "1", "--hidden", "32", "--embed", "16", "--batch-size", "4", "--seq-len", "16",
        "--lr", "1e-2", "--dropout", "0", "--warmup", "0", "--max-steps", "1", "--seed", "1"]
DICT = Path("/usr/share/dict/words")


def list_names() -> tuple[list[str], str]:
    """Distinct one-line names from this machine, in a seeded order, and where they came from."""
    if DICT.is_file():
        names = {w.strip() for w in DICT.read_text(encoding="utf-8", errors="ignore").splitlines()}
        source = str(DICT)
    else:
        names = set()
        for root in {sys.prefix, sys.base_prefix}:
            names.update(p.name.split(".")[0] for p in Path(root).rglob("*") if p.is_file())
        source = f"file names under {sorted({sys.prefix, sys.base_prefix})}"
    names = sorted(n for n in names if 2 <= len(n) <= 40 and n.isprintable())
    random.Random(0).shuffle(names)
    return names, source


def charrnn(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charrnn", *args], check=True, cwd=HERE.parent, **kw)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def items_rows(run: Path, corpus: Path, n: int) -> dict:
    lines = set(corpus.read_text(encoding="utf-8").split("\n"))
    t0 = time.perf_counter()
    out = charrnn("sample", str(run), "--items", str(n), "--new", "--seed", "0", capture_output=True, text=True)
    command_s = time.perf_counter() - t0
    got = out.stdout.splitlines()
    sampler = Sampler.load(run)
    t0 = time.perf_counter()
    sampler.corpus_lines()
    lines_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    items = sampler.items(n, new=True, seed=0)
    api_s = time.perf_counter() - t0
    streams = default_streams(n)
    chars = sum(len(i.text) + 1 for i in items)  # the least the streams made (drawn lines not kept add to it)
    cfg = SampleConfig(length=max(1, chars // streams), seed=0)
    t0 = time.perf_counter()
    sampler.sample_many(cfg, streams)
    reference_s = time.perf_counter() - t0
    return {"items": n, "command_s": round(command_s, 2), "found": len(got), "distinct": len(set(got)),
            "in_corpus": sum(t in lines for t in got), "api_s": round(api_s, 3),
            "corpus_lines_s": round(lines_s, 3), "item_chars": chars, "streams": streams,
            "reference_sample_many_s": round(reference_s, 3),
            "api_over_reference": round(api_s / reference_s, 2) if reference_s else None,
            "bar_met": command_s < 5 and len(got) == n == len(set(got)) and not any(t in lines for t in got)}


def membership_rows(names: list[str], work: Path, mb: int, lookups: int = 100_000) -> dict:
    corpus = work / f"list-{mb}mb.txt"
    rng = random.Random(1)
    if not corpus.is_file():
        with open(corpus, "w", encoding="utf-8") as f:
            size = 0
            while size < mb * 1_000_000:
                line = f"{rng.choice(names)}.{rng.choice(names)}\n"
                f.write(line)
                size += len(line.encode("utf-8"))
    run = work / f"list-{mb}mb-run"
    shutil.rmtree(run, ignore_errors=True)
    charrnn("train", str(corpus), "--out", str(run), "--quiet", "--precision", "fp32", *TINY)
    t0 = time.perf_counter()
    text = read_text(corpus)
    read_s = time.perf_counter() - t0
    known = rng.sample(text.split("\n")[:-1], lookups // 2)
    del text
    queries = known + [f"{rng.choice(names)}/{rng.choice(names)}" for _ in range(lookups - len(known))]
    sampler = Sampler.load(run)
    before = rss_mb()
    t0 = time.perf_counter()
    lines = sampler.corpus_lines()
    build_s = time.perf_counter() - t0
    after = rss_mb()
    t0 = time.perf_counter()
    labels = [lines.label(q) for q in queries]
    lookup_s = time.perf_counter() - t0
    assert labels[: len(known)].count("new") == 0 and set(labels[len(known):]) == {"new"}
    return {"corpus_mb": mb, "corpus_bytes": corpus.stat().st_size,
            "distinct_lines": len(lines.train | lines.validation),
            "build_s": round(build_s, 2), "build_rss_mb": round(after - before), "lookups": lookups,
            "lookup_s": round(lookup_s, 3), "reference_read_text_s": round(read_s, 2),
            "build_over_read": round(build_s / read_s, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="A run trained on a list corpus (default: train one)")
    p.add_argument("--train-time", default="90s")
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--membership-mb", type=int, default=50, help="0: skip the membership measurement")
    p.add_argument("--work", type=Path, default=HERE / "runs" / "items")
    p.add_argument("--write", action="store_true", help="append the result to benchmarks/items.jsonl")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names, source = list_names()
    run = args.run
    corpus = args.work / "list.txt"
    if run is None:
        corpus.write_text("\n".join(names) + "\n", encoding="utf-8")
        run = args.work / "list-run"
        shutil.rmtree(run, ignore_errors=True)
        charrnn("train", str(corpus), "--out", str(run), "--max-time", args.train_time, "--quiet", *SETTINGS)
    else:
        corpus = Path(json.loads((run / "config.json").read_text())["run"]["corpus"])
    info = run_info(run)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "list_source": source, "list_lines": len(names),
              "run": {"model": info["model"], "params": info["params"], "steps": info["step"],
                      "best_val_loss": info["best_val_loss"]},
              "command": f"charrnn sample RUN --items {args.items} --new --seed 0",
              "items": items_rows(run, corpus, args.items)}
    if args.membership_mb:
        result["membership"] = membership_rows(names, args.work, args.membership_mb)
    print(json.dumps(result), flush=True)
    if args.write:
        with open(HERE / "items.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""`charrnn export`'s figures (issue 28): ONNX Runtime against the sampler, and the web page.

1. Sampling speed, characters per second through the sampler's own loop (`Sampler.sample_many`:
   step, temperature, softmax, draw, decode), 1 stream and 32 streams, LSTM 1x512 and 2x512 (fresh
   weights: speed does not depend on what a model has learnt), the same model object each time, with
   the step run by torch in fp32 and in int8 (`--weights int8`, fbgemm) and by ONNX Runtime on the
   exported step in fp32 and in its dynamic int8 quantisation (`--engine onnxruntime`). Each figure
   is the best of 3; the ratios are against torch fp32 measured in the same run.
2. The page (`charrnn export --format html`) in headless Chromium (Debian's `chromium`): greedy
   characters per second of an LSTM 1x512 measured on the page (#bench: a timed loop of 3,000
   steps), with the step's matrix products in WebAssembly and in plain JavaScript, int8 and fp32
   weights; the page's size for LSTM 1x512 and 2x512 in each weight format.
3. With --run RUN (a trained run folder): how many of 300 greedy characters the page writes with
   int8, fp16 and fp32 weights agree with `charrnn sample -t 0 --weights fp32` (position by
   position, and the length of the common start).

    python -m benchmarks.export --run checkpoints/tinyshakespeare-lstm     # appends to benchmarks/export.jsonl
    python -m benchmarks.export --quick                                    # a check that it runs (nothing recorded)
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from .common import best_time, command_line, machine
from .sampling import _tokenizer  # tinyshakespeare's vocabulary
from charrnn.checkpoint import load_run
from charrnn.export.html import PAGE_WEIGHTS, render_page
from charrnn.fileio import append_line
from charrnn.families import build_model, model_config
from charrnn.sampler import SampleConfig, Sampler
from charrnn.quant import int8_supported
from charrnn.tokenizer import CharTokenizer

HERE = Path(__file__).resolve().parent
PRIME = "ROMEO:\n"
ENGINES = (("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def _lstm(tok: CharTokenizer, layers: int, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = model_config(tok.vocab_size, model="lstm", n_layers=layers, hidden=hidden, embed=128,
                          n_outputs=tok.n_chars)
    return build_model(config).eval()


def sampling_speeds(tok: CharTokenizer, shapes, threads: list[int], chars: int) -> list[dict]:
    rows = []
    for layers, hidden in shapes:
        model = _lstm(tok, layers, hidden)
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for streams in (1, 32):
                length = max(50, chars // streams)
                cfg = SampleConfig(length=length, temperature=1.0, seed=1)
                row = {"shape": f"{layers}x{hidden}", "threads": n_threads, "streams": streams}
                for engine, weights in ENGINES:
                    key = f"{engine}_{weights}"
                    if weights == "int8" and not int8_supported() and engine == "torch":
                        row[key] = None  # fbgemm is x86-only
                        continue
                    sampler = Sampler(model, tok, weights=weights, engine=engine)
                    seconds = best_time(lambda: sampler.sample_many(cfg, streams), repeat=3)
                    row[key] = round(length * streams / seconds)
                base = row["torch_fp32"]
                row["ratios"] = {k: round(row[k] / base, 2) for k in row if k.endswith(("fp32", "int8"))
                                 and row[k] is not None}
                rows.append(row)
                print(json.dumps(row))
    return rows


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no Chromium: apt-get install -y chromium")


def on_page(page: Path, fragment: str) -> dict:
    """Open the page in headless Chromium with `fragment` (real time: no virtual-time budget) and read the
    JSON the page's bench writes into #bench."""
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as profile:
        dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-dev-shm-usage", "--disable-background-networking",
                              f"--user-data-dir={profile}", "--dump-dom", f"{page.as_uri()}#{fragment}"],
                             capture_output=True, text=True, timeout=600).stdout
    found = re.search(r'<div id="bench">(.*?)</div>', dom, re.S)
    if not found or not found.group(1):
        raise RuntimeError(f"the page wrote no measurement ({page})")
    return json.loads(html.unescape(found.group(1)))


def page_figures(tok: CharTokenizer, hidden: int, chars: int, work: Path) -> dict:
    about = {"corpus": "benchmark", "model": "lstm", "shape": f"1x{hidden}", "params": 0, "corpus_chars": 0}
    sizes, speeds = {}, []
    for layers in (1, 2):
        model = _lstm(tok, layers, hidden)
        for weights in PAGE_WEIGHTS:
            page = work / f"lstm-{layers}x{hidden}-{weights}.html"
            page.write_bytes(render_page(model, tok, about | {"shape": f"{layers}x{hidden}"}, weights).encode())
            sizes[f"{layers}x{hidden} {weights}"] = page.stat().st_size
            if layers == 1 and weights in ("int8", "fp32"):
                for engine in ("wasm", "js"):
                    got = on_page(page, f"bench={chars}" + ("&js" if engine == "js" else ""))
                    speeds.append({"shape": f"1x{hidden}", "weights": weights, "engine": engine,
                                   "chars_per_s": round(got["chars_per_s"]), "wasm_ran": got["wasm"]})
                    print(json.dumps(speeds[-1]))
    print(json.dumps({"page_bytes": sizes}))
    return {"page_bytes": sizes, "page_speed": speeds}


def agreement(run: Path, work: Path, n: int = 300) -> dict:
    """How many of `n` greedy characters each page writes as the sampler does in fp32."""
    model, tok, saved, _ = load_run(run)
    want = Sampler(model, tok, weights="fp32").sample(prime=PRIME, length=n, temperature=0)[len(PRIME):]
    out = {"run": str(run), "model": saved.model_config, "chars": n}
    for weights in PAGE_WEIGHTS:
        page = work / f"run-{weights}.html"
        page.write_bytes(render_page(model, tok, {"corpus": saved.run.corpus}, weights).encode())
        got = on_page(page, f"bench={n}&prime={PRIME.replace(chr(10), '%0A')}")["text"]
        same = sum(a == b for a, b in zip(got, want))
        start = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        out[weights] = {"agree": same, "common_start": start}
        print(json.dumps({"agreement": weights, **out[weights]}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained run folder, for the page's agreement with the sampler")
    p.add_argument("--quick", action="store_true", help="small sizes, to check that it runs; nothing is recorded")
    p.add_argument("--out", type=Path, default=HERE / "export.jsonl", help="results are appended here")
    args = p.parse_args(argv)
    tok = _tokenizer()
    hidden = 64 if args.quick else 512
    shapes = [(1, hidden)] if args.quick else [(1, hidden), (2, hidden)]
    threads = sorted({1, os.cpu_count() or 1})
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "command": command_line("python -m benchmarks.export", argv)}
    print(json.dumps(result["machine"]))
    result["sampling"] = sampling_speeds(tok, shapes, threads, 200 if args.quick else 3000)
    with tempfile.TemporaryDirectory(prefix="charrnn-pages-") as tmp:
        result |= page_figures(tok, hidden, 300 if args.quick else 3000, Path(tmp))
        result["agreement"] = agreement(args.run, Path(tmp)) if args.run else None
    torch.set_num_threads(max(threads))
    if not args.quick:  # a quick run checks the script; its numbers are not a record
        append_line(args.out, json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

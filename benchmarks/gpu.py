"""The GPU check: everything charrnn promises on CUDA, measured in one command on one GPU.

    make bench-gpu                       # = PYTHONPATH=. python -m benchmarks.gpu
    python -m benchmarks.gpu --smoke     # the same code on the CPU at toy sizes (what the tests run)

Run it with the Python whose torch is built for CUDA, from the checkout as it is (no venv, no install:
a GPU machine with torch, tokenizers, tqdm, click and numpy but no package index can run it). It takes
about five minutes and at most eight on one GPU, and appends one JSON line per measurement to
benchmarks/gpu.jsonl, each with the GPU's name, torch's, CUDA's and cuDNN's versions and the date:

- `cuda tests`: the tests marked `cuda` (pytest -m cuda), passed and failed;
- `train`: `charrnn train tinyshakespeare --max-time 60s` with `--precision auto` and with `--precision
  fp16`, each then `charrnn eval` (validation loss, steps, characters per second, peak GPU memory);
- `train speed`: training characters per second of an LSTM 2x512, a minGRU 2x512 and the Transformer's
  large preset (6x192) at batch 64 x 512 characters in bf16, and each one's peak GPU memory;
- `sample speed`: characters per second of `Sampler` for 1 stream and for 64 at once, the same three
  models, and the peak memory.

Without a GPU it says so and exits 0, measuring nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from charrnn.checkpoint import read_metrics
from charrnn.measuring import sampling_speed
from charrnn.device import cpu_name, resolve_precision
from charrnn.families import build_model, model_config
from charrnn.presets import measure_speed
from charrnn.sampler import Sampler
from charrnn.tokenizer import CharTokenizer

from .common import bench_corpus, train_and_score, write_corpus

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
VOCAB = 65  # tinyshakespeare's characters: the output layer the speed rows are sized with
# (name, settings): the models of the speed rows, at batch 64 x 512
SPEED_MODELS = (
    ("lstm 2x512", dict(model="lstm", n_layers=2, hidden=512, embed=128)),
    ("mingru 2x512", dict(model="mingru", n_layers=2, hidden=512)),
    ("transformer large (6x192)", dict(model="transformer", n_layers=6, hidden=192, heads=6, context=512)),
)


def environment(device: torch.device) -> dict:
    """What every row records about where it was measured."""
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
           "cpu": cpu_name()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        env |= {"gpu": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return env


def cuda_tests() -> dict:
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                            capture_output=True, text=True, cwd=CHECKOUT)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", result.stdout)}
    failures = re.findall(r"^FAILED (\S+)", result.stdout, re.M)
    return {"what": "cuda tests", **counts, "failures": failures, "seconds": round(time.perf_counter() - t0, 1),
            "tail": result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else result.stderr[-300:]}


def train_rows(device: torch.device, budget: str, work: Path, corpus: Path) -> list[dict]:
    rows = []
    for precision in ("auto", "fp16"):
        settings = ["--device", device.type, "--precision", precision]
        if device.type == "cpu":  # --smoke: a toy model, and fp32 (fp16 needs a GPU)
            settings = ["--device", "cpu", "--precision", "fp32", "--model", "lstm", "--layers", "1", "--hidden",
                        "32", "--embed", "16", "--batch-size", "4", "--seq-len", "16", "--lr", "0.01", "--warmup",
                        "5", "--dropout", "0"]
        run = train_and_score(corpus, budget, work / f"train-{precision}", settings)
        train = read_metrics(work / f"train-{precision}", "train")
        rows.append({"what": "train", "precision_asked": precision, **run,
                     "chars_per_s": sorted(r["chars_per_s"] for r in train)[len(train) // 2],
                     "gpu_peak_mib": max((r.get("gpu_peak_mib") or 0) for r in train) or None,
                     "scaler_skipped": sum(r.get("scaler_skipped", 0) for r in train)})
    return rows


def _model(settings: dict, device: torch.device):
    config = model_config(vocab_size=VOCAB + 256, n_outputs=VOCAB, dropout=0.0, **settings)
    return build_model(config).to(device), config


def speed_rows(device: torch.device, batch: int, length: int, seconds: float) -> list[dict]:
    precision = resolve_precision("bf16", device) if device.type == "cuda" else "fp32"
    tok = CharTokenizer.from_chars([chr(32 + i) for i in range(VOCAB)])
    rows = []
    for name, shape in SPEED_MODELS:
        if device.type == "cpu":  # --smoke
            shape = {**shape, "n_layers": 1, "hidden": 48} | ({"context": length} if "context" in shape else {})
        settings = {**shape, "batch_size": batch, "seq_len": shape.get("context", length), "dropout": 0.0}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        rate = measure_speed({**settings, "n_outputs": VOCAB}, VOCAB + 256, device, precision, seconds=seconds)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append({"what": "train speed", "model": name, "precision": precision, "batch": f"{batch}x{settings['seq_len']}",
                     "chars_per_s": round(rate), "gpu_peak_mib": peak})
        model, config = _model(shape, device)
        model.eval()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sampler = Sampler(model, tok, device)
        one = sampling_speed(sampler, 1, 64 if device.type == "cpu" else 512)
        many = sampling_speed(sampler, 64, 16 if device.type == "cpu" else 256)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append({"what": "sample speed", "model": name, "weights": sampler.weights, "chars_per_s_1": round(one),
                     "chars_per_s_64": round(many), "gpu_peak_mib": peak})
        del model, sampler
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "gpu.jsonl", help="the JSON-lines file rows are appended to")
    p.add_argument("--work", type=Path, default=HERE / "runs" / "gpu", help="where the training runs go")
    p.add_argument("--smoke", action="store_true", help="on the CPU, at toy sizes: checks the script itself works")
    p.add_argument("--skip-tests", action="store_true", help="leave out the cuda-marked tests")
    args = p.parse_args(argv)
    if args.smoke:
        device, budget, batch, length, seconds = torch.device("cpu"), "2s", 4, 32, 0.3
    elif not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (benchmarks.gpu needs one; --smoke runs its code on the CPU)")
        return 0
    else:
        device, budget, batch, length, seconds = torch.device("cuda"), "60s", 64, 512, 5.0
    env = environment(device) | ({"smoke": True} if args.smoke else {})
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    if device.type == "cuda" and not args.skip_tests:
        rows.append(cuda_tests())
        print(rows[-1], flush=True)
    corpus = write_corpus(args.work / "smoke.txt", 50_000) if args.smoke else bench_corpus("tinyshakespeare", args.work)
    for row in train_rows(device, budget, args.work, corpus) + speed_rows(device, batch, length, seconds):
        rows.append(row)
        print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({**env, **row}) + "\n")
    print(f"{len(rows)} rows -> {args.out}")
    return 0



if __name__ == "__main__":
    sys.exit(main())

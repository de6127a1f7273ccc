"""3. Sampling throughput, time to first character, and what int8 weights cost in loss.

Throughput is measured through the public API (`Sampler.sample_many`: stepping, temperature,
softmax, multinomial draw and decoding all included) for LSTM 2x512 with one stream and 64 streams,
with fp32 and int8 step weights, and with 1 and 2 intra-op threads. Speed does not depend on what a
model has learnt, so these use fresh weights.

Time to first character is `charrnn sample RUN --length 1` as a whole process (interpreter start,
imports, checkpoint load, one step), against `python -c "import torch"` alone.

Fidelity: a reduced-precision step must sample from (almost) the same distribution. It is measured
as the mean loss of a trained model through the step path on held-out text, fp32 against int8 weights.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.families import model_config
from charrnn.families.rnn.model import CharRNN
from charrnn.quant import int8_supported
from charrnn.sampler import SampleConfig, Sampler
from charrnn.tokenizer import CharTokenizer

from .common import Section, best_time, write_corpus

REPO = Path(__file__).resolve().parent.parent


def _tokenizer() -> CharTokenizer:
    # tinyshakespeare's 65 characters + 256 byte tokens: the vocabulary the default run has
    return CharTokenizer.from_chars("\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz")


def step_flops_per_char(model: CharRNN) -> int:
    """2 flops per weight of every matrix a step multiplies (layer 0's input matrix is a table lookup)."""
    return 2 * sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2
                   and not n.startswith("embed") and n != "rnn.weight_ih_l0")


def throughput(ceilings: dict, quick: bool, sec: Section, device: str = "cpu") -> None:
    tok = _tokenizer()
    hidden = 64 if quick else 512
    torch.manual_seed(0)
    model = CharRNN(model_config(vocab_size=tok.vocab_size, model="lstm", n_layers=2, hidden=hidden, embed=128)).eval()
    fpc = step_flops_per_char(model)
    on_cpu = device == "cpu"
    weights = ["fp32"] + (["int8"] if int8_supported() and on_cpu else [])
    threads_before = torch.get_num_threads()
    results = {}
    try:
        for threads in sorted({1, min(2, os.cpu_count() or 1), threads_before}) if on_cpu else [threads_before]:
            torch.set_num_threads(threads)
            for w in weights:
                sampler = Sampler(model, tok, device, weights=w)
                for streams, length in ((1, 50 if quick else 1500), (64, 10 if quick else 100)):
                    cfg = SampleConfig(length=length, temperature=1.0, seed=0)
                    t = best_time(lambda: sampler.sample_many(cfg, streams), repeat=2 if quick else 5)
                    rate = streams * length / t
                    results[(threads, w, streams)] = rate
                    gflops = rate * fpc / 1e9
                    note = f"{gflops:.1f} GFLOP/s"
                    if streams > 1 and ceilings.get("fp32"):
                        note += f" = {gflops / ceilings['fp32']:.0%} of the fp32 matmul ceiling"
                    where = f"{threads} thread{'s' if threads > 1 else ''}" if on_cpu else device
                    if not on_cpu:
                        note = ""  # the ceiling is the CPU's
                    sec.row(f"LSTM 2x{hidden} sample, {streams} stream{'s' if streams > 1 else ''}, {w} weights, "
                            f"{where}", round(rate), "chars/s", note,
                            {"seconds": t, "chars": streams * length, "gflops": round(gflops, 2)})
    finally:
        torch.set_num_threads(threads_before)
    if not int8_supported() and on_cpu:
        sec.row("int8 step weights", None, "", "this torch build has no fbgemm dynamic quantisation")
    for streams, target, bar in ((1, 6000, ">= 6000 chars/s"), (64, 25000, ">= 25000 chars/s")):
        for w in weights:
            best = max(v for (th, ww, s), v in results.items() if ww == w and s == streams)
            sec.bar(f"LSTM 2x{hidden} sampling, {streams} stream{'s' if streams > 1 else ''}, {w} weights, "
                    + ("best threads" if on_cpu else device),
                    bar, round(best), lambda v, t=target: v >= t)


def _make_run(tmp: Path, quick: bool) -> Path:
    """A real run folder of an LSTM 2x512 (one training step: only its size matters here)."""
    from charrnn.training import RunOptions, train

    corpus = write_corpus(tmp / "tiny.txt", 40_000)
    out = tmp / "run"
    settings = dict(model="lstm", n_layers=2, hidden=64 if quick else 512, embed=128, batch_size=2, seq_len=16,
                    max_steps=1, warmup_steps=1)
    train(RunOptions(corpus=str(corpus), out=out, device="cpu", precision="fp32", quiet=True, sample_len=0), settings)
    return out


def first_character(quick: bool, sec: Section, tmp: Path) -> None:
    run = _make_run(tmp, quick)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    repeat = 1 if quick else 5

    def wall(cmd) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tmp)
        return time.perf_counter() - t0

    sample_cmd = [sys.executable, "-m", "charrnn", "sample", str(run), "--length", "1", "--seed", "0"]
    torch_cmd = [sys.executable, "-c", "import torch"]
    python_cmd = [sys.executable, "-c", "pass"]
    times = {"sample": [], "torch": [], "python": []}
    for _ in range(repeat):  # alternate, so that noise falls on each alike
        times["sample"].append(wall(sample_cmd))
        times["torch"].append(wall(torch_cmd))
        times["python"].append(wall(python_cmd))
    t_sample, t_torch, t_python = (median(times[k]) for k in ("sample", "torch", "python"))
    # what the imports cost, from the interpreter's own account (cumulative seconds per package)
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import charrnn.cli, charrnn.sampler"],
                         capture_output=True, text=True, env=env, cwd=tmp).stderr
    heavy = {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s*(\S+)", line)
        if m and m.group(2) in ("torch", "numpy", "tokenizers", "click", "tqdm", "tqdm.auto", "charrnn"):
            heavy[m.group(2)] = int(m.group(1)) / 1e6
    sec.row("`charrnn sample RUN --length 1`, whole process", round(t_sample, 3), "s",
            f"median of {repeat}", {"runs_s": times["sample"]})
    sec.row("`python -c 'import torch'`, whole process", round(t_torch, 3), "s", f"median of {repeat}",
            {"runs_s": times["torch"]})
    sec.row("`python -c pass`, whole process", round(t_python, 3), "s", f"median of {repeat}")
    sec.row("share of `charrnn sample` spent starting python + importing torch", round(t_torch / t_sample, 3), "",
            "-X importtime, cumulative s: " + ", ".join(f"{k} {v:.2f}" for k, v in heavy.items()),
            {"importtime_s": heavy})
    sec.bar("`charrnn sample --length 1` wall time", "< 2 s", round(t_sample, 3), lambda s: s < 2.0)


def step_loss(model: CharRNN, ids: np.ndarray, weights: str, streams: int = 1) -> float:
    """Mean loss of predicting ids[1:] from ids[:-1] one character at a time through `model.step`."""
    n = (len(ids) - 1) // streams
    x = torch.from_numpy(np.asarray(ids[: n * streams + 1], dtype=np.int64))
    rows = torch.stack([x[b * n : (b + 1) * n + 1] for b in range(streams)])  # (streams, n + 1)
    state, total = None, 0.0
    for t in range(n):
        logits, state = model.step(rows[:, t], state, weights=weights)
        total += F.cross_entropy(logits.float(), rows[:, t + 1], reduction="sum").item()
    return total / (n * streams)


def fidelity(run: Path | None, corpus: str | None, quick: bool, sec: Section, tmp: Path) -> None:
    """Loss through the step path with fp32 and int8 weights, on the run's validation text."""
    from charrnn import checkpoint as ck
    from charrnn.corpora import resolve_corpus
    from charrnn.data import encode_corpus, split

    if run is None:
        # No run given: train a small one briefly (a barely trained model; a real run is better: --run).
        from charrnn.training import RunOptions, train

        corpus = corpus or str(write_corpus(tmp / "fid.txt", 300_000))
        settings = dict(model="lstm", n_layers=2, hidden=64 if quick else 512, embed=128, batch_size=16,
                        seq_len=64, max_time=3 if quick else 60, warmup_steps=10, lr=4e-3)
        run = tmp / "fid-run"
        train(RunOptions(corpus=corpus, out=run, device="cpu", precision="fp32", quiet=True, sample_len=0), settings)
    model, tok, ckpt, path = ck.load_run(run)
    corpus_path = resolve_corpus(corpus or ckpt.run.corpus)
    ids = encode_corpus(corpus_path, tok, tmp / "fid-cache", unknown="bytes")
    val = split(ids, ckpt.run.val_frac)[1][: 300 if quick else 5000]
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(val, dtype=np.int64))[None]
        fused = F.cross_entropy(model(x[:, :-1])[0][0].float(), x[0, 1:]).item()
    fp32 = step_loss(model, val, "fp32")
    note = f"{len(val) - 1} validation chars of {Path(corpus_path).name}, one stream; model: {path}"
    sec.row("fused forward loss (fp32)", round(fused, 5), "nats/char", note)
    sec.row("step-path loss, fp32 weights", round(fp32, 5), "nats/char", "equals the fused forward up to rounding")
    if not int8_supported():
        sec.row("step-path loss, int8 weights", None, "nats/char", "no fbgemm in this torch build")
        return
    int8 = step_loss(model, val, "int8")
    sec.row("step-path loss, int8 weights", round(int8, 5), "nats/char")
    sec.row("int8 - fp32 step loss", round(int8 - fp32, 5), "nats/char",
            f"{(int8 - fp32) / fp32:+.2%} of the fp32 loss", {"relative": (int8 - fp32) / fp32})


def measure(ceilings: dict, quick: bool = False, run: Path | None = None, corpus: str | None = None,
            device: str = "cpu") -> Section:
    sec = Section("sampling")
    throughput(ceilings, quick, sec, device)
    if device != "cpu":
        return sec  # time to first character and int8 fidelity are CPU matters
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        first_character(quick, sec, Path(tmp))
        fidelity(run, corpus, quick, sec, Path(tmp))
    return sec

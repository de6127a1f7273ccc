"""Is our Transformer a straw man? Train it at nanoGPT's CPU recipe for shakespeare_char and compare with
a bare PyTorch loop of the same size, in the same run, on the same machine.

    python benchmarks/nanogpt_recipe.py [--steps 2000] [--device cpu] [--out benchmarks/runs/nanogpt-recipe]

The recipe: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps, dropout 0, AdamW
(lr 1e-3, betas 0.9/0.99, weight decay 0.1), 100 warmup steps then cosine to 1e-4, gradient clip 1.0.
The vocabulary is tinyshakespeare's 65 characters (our run uses --no-byte-fallback, as nanoGPT has
no byte tokens).

1. The reference: a bare training loop written here (a minimal GPT of that size, nanoGPT-style random
   batches, the same optimiser and schedule, no evaluation, no checkpoints), timed over the same
   number of steps, once before ours and once after (the mean counts). It stands in for nanoGPT's
   own loop, which is not installed here.
2. Ours: `charrnn.training.train` at the same settings (our random-window batcher, trainer,
   checkpoints), validating as a plain run does (ten passes: the nine intermediate ones on a fixed
   16,384-character subset, the last on the whole split); then `charrnn eval`'s number (every validation character
   predicted once, strided windows) and, to compare with nanoGPT's printed estimate, the mean loss of
   200 random validation batches of 12 x 64 (nanoGPT's estimator, which used 20).

The bars: our val loss <= 1.886 (what nanoGPT printed by its estimator), and our training wall time,
every validation pass included, at most 1.05 x the reference loop's. Prints one JSON line and appends it to benchmarks/nanogpt_recipe.jsonl.
Needs the corpus: set CHARRNN_CORPORA (the Makefile points it at ../shared/corpora).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from charrnn import checkpoint as ck  # noqa: E402
from charrnn.analysis import eval_run  # noqa: E402
from charrnn.corpora import resolve_corpus  # noqa: E402
from charrnn.training import RunOptions, train  # noqa: E402

RECIPE = dict(n_layers=4, heads=4, hidden=128, context=64, batch_size=12, dropout=0.0, lr=1e-3, min_lr_ratio=0.1,
              warmup_steps=100, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0)


# --- the reference: a bare loop ------------------------------------------------------------------
class BareBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.fc_out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in self.qkv(self.ln1(x)).chunk(3, -1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + self.out(y)
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class BareGPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, context: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[BareBlock(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d, bias=False)
        self.lm = nn.Linear(d, vocab, bias=False)
        self.lm.weight = self.tok.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1), device=idx.device))
        logits = self.lm(self.ln(self.blocks(x)))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def bare_loop(train_ids: np.ndarray, vocab: int, steps: int, device: torch.device, seed: int) -> dict:
    r = RECIPE
    torch.manual_seed(seed)
    model = BareGPT(vocab, r["hidden"], r["n_layers"], r["heads"], r["context"]).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]}, {"params": rest, "weight_decay": 0}],
                            lr=r["lr"], betas=(r["beta1"], r["beta2"]))
    data = torch.from_numpy(train_ids.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    B, T = r["batch_size"], r["context"]
    t0 = time.perf_counter()
    for step in range(steps):
        if step < r["warmup_steps"]:
            lr = r["lr"] * (step + 1) / r["warmup_steps"]
        else:
            frac = (step - r["warmup_steps"]) / max(steps - r["warmup_steps"], 1)
            lo = r["lr"] * r["min_lr_ratio"]
            lr = lo + 0.5 * (r["lr"] - lo) * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(len(data) - T - 1, (B,), generator=gen)
        x = torch.stack([data[i:i + T] for i in ix]).to(device)
        y = torch.stack([data[i + 1:i + T + 1] for i in ix]).to(device)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    final = loss.item()  # syncs the device before the clock stops
    return {"wall_s": time.perf_counter() - t0, "final_train_loss": final,
            "params": sum(p.numel() for p in model.parameters())}


# --- ours ----------------------------------------------------------------------------------------
@torch.no_grad()
def nanogpt_estimate(model, val_ids: np.ndarray, device: torch.device, batches: int, seed: int = 0) -> float:
    """nanoGPT's estimate_loss on the validation split: the mean loss of random 12 x 64 batches."""
    model.eval()
    g = np.random.default_rng(seed)
    T, B = RECIPE["context"], RECIPE["batch_size"]
    losses = []
    for _ in range(batches):
        ix = g.integers(0, len(val_ids) - T - 1, B)
        w = torch.from_numpy(np.asarray(val_ids[ix[:, None] + np.arange(T + 1)], dtype=np.int64)).to(device)
        losses.append(model(w[:, :-1], None, w[:, 1:])[1].item())
    return float(np.mean(losses))


def ours(steps: int, device: str, out: Path, seed: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    opts = RunOptions(corpus="tinyshakespeare", out=out, byte_fallback=False, device=device, precision="fp32",
                      quiet=True, sample_len=0)
    settings = dict(RECIPE, model="transformer", max_steps=steps, log_interval=50, seed=seed)
    t0 = time.perf_counter()
    summary = train(opts, settings)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / ck.METRICS).read_text().splitlines()]
    train_s = [r for r in records if r["kind"] == "train"][-1]["elapsed"]
    val = [r for r in records if r["kind"] == "val"][-1]
    t1 = time.perf_counter()
    again = eval_run(out, "tinyshakespeare", device=device)  # `charrnn eval`, for the record
    eval_s = time.perf_counter() - t1
    model, tok, ckpt, _ = ck.load_run(out)
    from charrnn.data import encode_corpus, split

    ids = encode_corpus(resolve_corpus("tinyshakespeare"), tok, out / "cache")
    val_ids = split(ids, ckpt.run.val_frac)[1]
    dev = torch.device(device)
    return {"wall_s": wall, "train_s_with_final_eval": summary["elapsed"], "train_s_at_last_step": train_s,
            "eval_s": eval_s, "val_loss": again.loss_nats, "val_loss_during_run": val["loss_nats"],
            "validations": sum(r["kind"] == "val" for r in records),
            "nanogpt_estimate_200": nanogpt_estimate(model.to(dev), val_ids, dev, 200),
            "nanogpt_estimate_20": nanogpt_estimate(model.to(dev), val_ids, dev, 20),
            "params": model.num_params(), "vocab": tok.vocab_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", type=Path, default=HERE / "runs" / "nanogpt-recipe")
    args = p.parse_args()
    device = torch.device(args.device)
    from charrnn.data import build_tokenizer, encode_corpus, split

    corpus = resolve_corpus("tinyshakespeare")
    tok = build_tokenizer(corpus, byte_fallback=False)
    args.out.mkdir(parents=True, exist_ok=True)
    train_ids = np.asarray(split(encode_corpus(corpus, tok, args.out.parent / "cache-bare"), 0.1)[0])
    # The reference runs before and after ours and counts as their mean: a few minutes apart, the same
    # loop on this VM has measured 5 % apart, as large as the difference being judged.
    before = bare_loop(train_ids, tok.vocab_size, args.steps, device, args.seed)
    print(f"reference loop: {before}", file=sys.stderr, flush=True)
    result = ours(args.steps, args.device, args.out, args.seed)
    after = bare_loop(train_ids, tok.vocab_size, args.steps, device, args.seed)
    print(f"reference loop again: {after}", file=sys.stderr, flush=True)
    reference = {**before, "wall_s": (before["wall_s"] + after["wall_s"]) / 2}
    row = {
        "steps": args.steps,
        "reference_wall_s": round(reference["wall_s"], 1),  # the mean of the two below
        "reference_wall_s_before": round(before["wall_s"], 1),
        "reference_wall_s_after": round(after["wall_s"], 1),
        "reference_final_train_loss": round(reference["final_train_loss"], 4),
        "ours_train_s": round(result["train_s_at_last_step"], 1),  # the training steps alone
        "ours_train_s_with_final_eval": round(result["train_s_with_final_eval"], 1),  # every validation too
        "ours_validations": result["validations"],
        "ours_val_loss": round(result["val_loss"], 4),  # charrnn eval: every validation character once
        "ours_nanogpt_estimate_20": round(result["nanogpt_estimate_20"], 4),
        "ours_nanogpt_estimate_200": round(result["nanogpt_estimate_200"], 4),
        "ours_eval_s": round(result["eval_s"], 1),
        "bar_val_loss": 1.886,
        "meets_loss_bar": result["val_loss"] <= 1.886,
        "time_ratio": round(result["train_s_with_final_eval"] / reference["wall_s"], 3),
        "meets_time_bar": result["train_s_with_final_eval"] <= 1.05 * reference["wall_s"],
        "params": result["params"], "reference_params": reference["params"],
        "device": args.device,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
    }
    print(json.dumps(row), flush=True)
    with open(HERE / "nanogpt_recipe.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

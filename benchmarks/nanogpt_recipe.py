"""Is our Transformer a straw man? Train it at nanoGPT's CPU recipe for shakespeare_char and compare with
a bare PyTorch loop of the same size, in the same run, on the same machine.

    python benchmarks/nanogpt_recipe.py [--steps 2000] [--device cpu] [--out benchmarks/runs/nanogpt-recipe]

The recipe: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps, dropout 0, AdamW
(lr 1e-3, betas 0.9/0.99, weight decay 0.1), 100 warmup steps then cosine to 1e-4, gradient clip 1.0.
The vocabulary is tinyshakespeare's 65 characters (our run uses --no-byte-fallback, as nanoGPT has
no byte tokens).

1. The reference: a bare loop written here in nanoGPT's manner (a minimal GPT of that size, random
   batches, the same optimiser and schedule, and nanoGPT's periodic evaluation: every 250 steps and
   at the end, the mean loss of 20 random 12 x 64 batches of each split, as its CPU recipe has it),
   run once before ours and once after (the mean wall time counts). It stands in for nanoGPT's own
   loop, which is not installed here.
2. Ours: `charrnn.training.train` at the same settings (our random-window batcher, trainer,
   checkpoints), validating as a plain run does.

Like with like: both models are scored by one estimator, nanoGPT's (the mean loss of 200 random 12 x 64
validation batches, seeded alike; nanoGPT printed 1.886 by it, with 20), and ours by `charrnn eval`
too (every validation character once) for the record; both wall times are measured around the whole
thing each does (building the model, training, evaluating; ours also writes its checkpoints).
The bars: our val loss by nanoGPT's estimator <= 1.886, and our wall time at most 1.05 x the
reference's. One JSON line (with the CPU's name and the date), appended to benchmarks/nanogpt_recipe.jsonl.
Needs the corpus: set CHARRNN_CORPORA (the Makefile points it at ../shared/corpora).
"""

from __future__ import annotations

import argparse
import json
import math
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

from benchmarks.common import command_line, machine  # noqa: E402
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


def bare_loop(train_ids: np.ndarray, val_ids: np.ndarray, vocab: int, steps: int, device: torch.device,
              seed: int) -> dict:
    r = RECIPE
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = BareGPT(vocab, r["hidden"], r["n_layers"], r["heads"], r["context"]).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]}, {"params": rest, "weight_decay": 0}],
                            lr=r["lr"], betas=(r["beta1"], r["beta2"]))
    data = torch.from_numpy(train_ids.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    B, T = r["batch_size"], r["context"]
    for step in range(steps + 1):
        if step % 250 == 0 or step == steps:  # nanoGPT's estimate_loss, at its CPU recipe's eval_iters=20
            model.eval()
            for split_ids in (train_ids, val_ids):
                nanogpt_estimate(lambda x, y: model(x, y), split_ids, device, 20, seed=step)
            model.train()
        if step == steps:
            break
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
    wall = time.perf_counter() - t0
    model.eval()
    return {"wall_s": wall, "nanogpt_estimate_200": nanogpt_estimate(lambda x, y: model(x, y), val_ids, device, 200),
            "params": sum(p.numel() for p in model.parameters())}


# --- ours ----------------------------------------------------------------------------------------
@torch.no_grad()
def nanogpt_estimate(loss_of, val_ids: np.ndarray, device: torch.device, batches: int, seed: int = 0) -> float:
    """nanoGPT's estimate_loss on a split: the mean loss of `batches` random 12 x 64 batches, `loss_of(x, y)`
    giving a model's mean loss on one (the same windows for any model, for a seed)."""
    g = np.random.default_rng(seed)
    T, B = RECIPE["context"], RECIPE["batch_size"]
    losses = []
    for _ in range(batches):
        ix = g.integers(0, len(val_ids) - T - 1, B)
        w = torch.from_numpy(np.asarray(val_ids[ix[:, None] + np.arange(T + 1)], dtype=np.int64)).to(device)
        losses.append(loss_of(w[:, :-1].contiguous(), w[:, 1:].contiguous()).item())
    return float(np.mean(losses))


def ours(steps: int, device: str, out: Path, seed: int, val_ids: np.ndarray) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    opts = RunOptions(corpus="tinyshakespeare", out=out, byte_fallback=False, device=device, precision="fp32",
                      quiet=True, sample_len=0)
    settings = dict(RECIPE, model="transformer", max_steps=steps, log_interval=50, seed=seed)
    t0 = time.perf_counter()
    summary = train(opts, settings)
    wall = time.perf_counter() - t0
    again = eval_run(out, "tinyshakespeare", device=device)  # `charrnn eval`, for the record
    model = ck.load_run(out)[0].to(device).eval()
    return {"wall_s": wall, "train_elapsed_s": summary["elapsed"], "val_loss": again.loss_nats,
            "validations": len(ck.read_metrics(out, "val")),
            "nanogpt_estimate_200": nanogpt_estimate(lambda x, y: model(x, None, y)[1], val_ids, torch.device(device),
                                                     200),
            "params": model.num_params()}


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
    train_ids, val_ids = (np.asarray(a) for a in split(encode_corpus(corpus, tok, args.out.parent / "cache-bare"), 0.1))
    # The reference runs before and after ours and counts as their mean: a few minutes apart, the same
    # loop has measured as far apart as the difference being judged.
    before = bare_loop(train_ids, val_ids, tok.vocab_size, args.steps, device, args.seed)
    print(f"reference loop: {before}", file=sys.stderr, flush=True)
    result = ours(args.steps, args.device, args.out, args.seed, val_ids)
    after = bare_loop(train_ids, val_ids, tok.vocab_size, args.steps, device, args.seed)
    print(f"reference loop again: {after}", file=sys.stderr, flush=True)
    reference_wall = (before["wall_s"] + after["wall_s"]) / 2
    row = {
        "steps": args.steps,
        "reference_wall_s": round(reference_wall, 1),  # the mean of the two below, each the whole loop
        "reference_wall_s_before": round(before["wall_s"], 1),
        "reference_wall_s_after": round(after["wall_s"], 1),
        "reference_nanogpt_estimate_200": round(before["nanogpt_estimate_200"], 4),
        "ours_wall_s": round(result["wall_s"], 1),  # the whole train() call: setup, training, validations, checkpoints
        "ours_validations": result["validations"],
        "ours_nanogpt_estimate_200": round(result["nanogpt_estimate_200"], 4),  # the estimator both are scored by
        "ours_val_loss_charrnn_eval": round(result["val_loss"], 4),  # every validation character once
        "bar_val_loss": 1.886,  # nanoGPT's own printout, by its estimator
        "meets_loss_bar": result["nanogpt_estimate_200"] <= 1.886,
        "time_ratio": round(result["wall_s"] / reference_wall, 3),
        "meets_time_bar": result["wall_s"] <= 1.05 * reference_wall,
        "params": result["params"], "reference_params": before["params"],
        "device": args.device, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "command": command_line("python benchmarks/nanogpt_recipe.py"),
    }
    print(json.dumps(row), flush=True)
    with open(HERE / "nanogpt_recipe.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

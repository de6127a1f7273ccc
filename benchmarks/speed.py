"""Speed of the Transformer baseline beside the LSTM, with random weights (speed does not depend on them).

    OMP_NUM_THREADS=2 python benchmarks/speed.py [--params 3M] [--device cpu]

1. Training: optimizer steps per second and characters per second of each Transformer budget preset
   (presets.presets_for("transformer")) and of nanoGPT's CPU recipe (4x128, context 64, batch 12), forward +
   backward + AdamW on random ids, after 3 warm-up steps.
2. Sampling: `Sampler` characters per second for one stream (512 characters, so the Transformer's
   window slides) and for 64 streams (128 characters each), for an LSTM and a Transformer sized by
   `compare.size_for_params` from each family's largest preset to the same parameter count (the LSTM with
   fp32 weights and with the int8 weights `Sampler` uses by default on x86), and the state each stream carries.

Prints one JSON line per measurement. About half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from charrnn.compare import size_for_params  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.families import build_model, model_config, model_settings  # noqa: E402
from charrnn.measuring import state_bytes  # noqa: E402
from charrnn.presets import presets_for  # noqa: E402
from charrnn.sampler import SampleConfig, Sampler, resolve_step_weights  # noqa: E402
from charrnn.tokenizer import CharTokenizer  # noqa: E402
from charrnn.units import parse_count  # noqa: E402

TOK = CharTokenizer.from_chars(string.ascii_letters + " \n.,;:!?'-&$3")  # tinyshakespeare's 65 characters


def _config(settings: dict) -> ModelConfig:
    return model_config(TOK.vocab_size, **model_settings(settings)[0])


def train_speed(settings: dict, device: torch.device, steps: int = 10) -> dict:
    torch.manual_seed(0)
    model = build_model(_config(settings)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    B, T = settings["batch_size"], settings["context"]
    x = torch.randint(0, TOK.n_chars, (B, T), device=device)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        _, loss, _ = model(x, targets=x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    dt = (time.perf_counter() - t0) / steps
    return {"steps_per_s": round(1 / dt, 2), "chars_per_s": round(B * T / dt), "params": model.num_params()}


def sample_speed(model, device: torch.device, weights: str) -> dict:
    sampler = Sampler(model, TOK, device, weights=weights)
    sampler.sample(length=16, seed=0)
    out = {}
    for streams, length in ((1, 512), (64, 128)):
        t0 = time.perf_counter()
        sampler.sample_many(SampleConfig(length=length, seed=0), streams)
        out[f"chars_per_s_{streams}"] = round(streams * length / (time.perf_counter() - t0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="3M", help="parameter count for the sampling comparison")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    common = {"threads": torch.get_num_threads(), "device": args.device, "torch": torch.__version__}
    recipes = [("nanogpt-cpu-recipe", dict(n_layers=4, hidden=128, heads=4, context=64, batch_size=12))]
    recipes += [(f"preset {p.name}", p.settings) for p in presets_for("transformer")]
    for name, settings in recipes:
        row = {"what": "train", "config": name, **train_speed({**settings, "model": "transformer"}, device), **common}
        print(json.dumps(row), flush=True)
    target = parse_count(args.params)
    for kind in ("lstm", "transformer"):
        deepest = presets_for(kind)[-1].settings  # the family's largest preset, widened or narrowed to the target
        settings = {**deepest, **size_for_params(kind, target, TOK.vocab_size, deepest)}
        torch.manual_seed(0)
        model = build_model(_config(settings)).to(device).eval()
        shape = f"{settings['n_layers']}x{settings['hidden']}" + (
            f" ctx {settings['context']}" if kind == "transformer" else "")
        # the RNN in exact fp32 and with the int8 weights `Sampler` picks by default on x86; a Transformer has fp32 only
        for weights in ("fp32", "int8") if kind != "transformer" and resolve_step_weights("auto", model, device) == "int8" \
                else ("fp32",):
            row = {"what": "sample", "model": kind, "shape": shape, "params": model.num_params(), "weights": weights,
                   "state_bytes": state_bytes(model), **sample_speed(model, device, weights), **common}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

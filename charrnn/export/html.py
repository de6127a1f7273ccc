"""The page `charrnn export --format html` writes: one self-contained file that samples from the model in
the browser, offline (a file:// URL will do), on a phone as on a desktop.

The weights are in the page as base64: the matrices as int8 with one fp32 scale per row (the default: a
quarter of fp32's bytes), fp16, or fp32 (exactly the model's numbers); vectors (biases, norms) always
fp32. The step is plain JavaScript, one file per family (charrnn/web/<family>.js, named by the family's
PortableStep.web), reading the model's state_dict by name; play.js is the loop around it. Plain
JavaScript rather than WebAssembly or onnxruntime-web: it needs no toolchain and no 10 MB runtime
inlined, and it is readable next to the family's Python.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from typing import Any

import torch

from ..errors import CharrnnError
from ..families import portable_step
from ..model_folder import unique_weights
from ..tokenizer import CharTokenizer
from . import about as about_
from .wasm import matvec_module

PAGE_WEIGHTS = ("int8", "fp16", "fp32")



def encode(t: torch.Tensor, weights: str) -> dict[str, Any]:
    """A tensor as the page stores it: matrices in `weights`' format, vectors in fp32."""
    t = t.detach().float().cpu().contiguous()
    entry: dict[str, Any] = {"shape": list(t.shape)}
    if t.dim() < 2 or weights == "fp32":
        return entry | {"dtype": "fp32", "data": _b64(t)}
    if weights == "fp16":
        return entry | {"dtype": "fp16", "data": _b64(t.half())}
    rows = t.reshape(t.size(0), -1)
    scale = (rows.abs().amax(1) / 127).clamp_min(1e-12)  # symmetric, one per row (as the sampler's int8)
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return entry | {"dtype": "int8", "data": _b64(q), "scale": _b64(scale)}


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def render_page(model: torch.nn.Module, tok: CharTokenizer, about: dict[str, Any], weights: str = "int8") -> str:
    if weights not in PAGE_WEIGHTS:
        raise CharrnnError(f"page weights must be one of {', '.join(PAGE_WEIGHTS)}, not {weights!r}")
    step = portable_step(model)
    if step.web is None:
        raise CharrnnError(f"the page has no step for a {model.config.model} model (its family names none)")
    tensors, tied = unique_weights(model)
    data = {"step": step.web, "config": model.config.to_dict() | {"n_outputs": model.config.outputs,
                                                                   **(step.window or {})},
            "chars": tok.chars, "byte_fallback": tok.byte_fallback, "about": about, "weights_format": weights,
            "weights": {name: encode(t, weights) for name, t in tensors.items()}, "tied": tied,
            "wasm": base64.b64encode(matvec_module()).decode("ascii")}
    web = resources.files("charrnn") / "web"
    text = about_.line(about) + f"; {weights} weights in this page"
    fill = {"__TITLE__": html.escape(str(about.get("corpus", "a character-level model"))),
            "__ABOUT__": html.escape(text),
            # inside <script>: "</" would end the element, so every "<" is escaped (JSON reads it back)
            "__MODEL__": json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c"),
            "__STEP__": (web / f"{step.web}.js").read_text(encoding="utf-8"),
            "__PLAY__": (web / "play.js").read_text(encoding="utf-8")}
    page = (web / "play.html").read_text(encoding="utf-8")
    return re.sub("|".join(fill), lambda m: fill[m.group(0)], page)  # one pass: no value is read as a key

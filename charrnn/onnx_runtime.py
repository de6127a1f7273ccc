"""Sampling from an exported step graph (`charrnn export --format onnx`) with ONNX Runtime: numpy and
onnxruntime only, no torch, so it runs wherever those install.

    from charrnn.onnx_runtime import OnnxModel
    m = OnnxModel("model.onnx")
    print(m.generate("ROMEO:", 300, temperature=0.8, seed=1)[0])

The file is the model's one-character step: ids (B,) and the state in, logits over the corpus's
characters and the new state out. Its metadata (`charrnn`, JSON) names the state's tensors and their
shapes, and `tokenizer` holds the vocabulary (a Hugging Face tokenizer.json). This module is the loop
around the step: it reads a prime one character at a time and, for a model that reads windows (the
Transformer), keeps the window's characters and rebuilds the state when the window is full, by the
rule the metadata's `window` gives (the sampler's, charrnn.models.window_start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CharrnnError, one_line
from .extras import optional
from .fileio import read_bytes, shown
from .tokenizer import CharTokenizer

FORMAT = "charrnn-onnx/1"


@dataclass
class OnnxState:
    tensors: list[np.ndarray]  # the graph's state inputs, in order
    window: np.ndarray | None = None  # (B, n) the ids in the window, for a model that reads windows


def window_start(t: int, context: int, stride: int) -> int:
    """Where the window starts that predicts character t: 0 up to `context`, then jumps of `stride`."""
    return 0 if t <= context else stride * -(-(t - context) // stride)


class OnnxModel:
    """An exported step graph in an ONNX Runtime session, with the loop that samples from it."""

    def __init__(self, graph: bytes | str | Path, threads: int | None = None):
        ort = optional("onnxruntime")  # asked for here: importing this module needs only numpy
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
        opts.log_severity_level = 3  # warnings about unused initializers are not the user's business
        where = "the graph given" if isinstance(graph, bytes) else shown(graph)
        try:
            source = graph if isinstance(graph, bytes) else read_bytes(graph, "ONNX file")
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
            props = self.session.get_modelmeta().custom_metadata_map
            self.meta = json.loads(props["charrnn"])
            self.tok = CharTokenizer.from_str(props["tokenizer"])
        except CharrnnError:
            raise
        except Exception as e:  # onnxruntime's errors derive from Exception alone; a missing key, bad JSON
            raise CharrnnError(f"{where} is not a charrnn ONNX step graph ({one_line(e, 100) or type(e).__name__})") \
                from None
        if self.meta.get("format") != FORMAT:
            raise CharrnnError(f"not a charrnn ONNX step graph (format {self.meta.get('format')!r})")
        self.state_specs = self.meta["state"]
        self.window = self.meta.get("window")
        self.outputs = int(self.meta["outputs"])
        self.output_names = ["logits", *(f"new_{s['name']}" for s in self.state_specs)]

    def init_state(self, batch: int) -> OnnxState:
        tensors = [np.zeros([batch if d == "batch" else d for d in s["shape"]], dtype=s["dtype"])
                   for s in self.state_specs]
        return OnnxState(tensors, np.zeros((batch, 0), np.int64) if self.window else None)

    def _run(self, ids: np.ndarray, state: OnnxState) -> tuple[np.ndarray, OnnxState]:
        feed = {"ids": ids} | {s["name"]: t for s, t in zip(self.state_specs, state.tensors)}
        logits, *tensors = self.session.run(self.output_names, feed)
        window = None if state.window is None else np.concatenate([state.window, ids[:, None]], 1)
        return logits, OnnxState(tensors, window)

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, OnnxState]:
        """ids (B, T >= 1) -> logits (B, outputs) for the character after them, and the state."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.window:
            ids = ids[:, window_start(ids.shape[1], self.window["context"], self.window["stride"]):]
        state = self.init_state(ids.shape[0])
        for t in range(ids.shape[1]):
            logits, state = self._run(ids[:, t], state)
        return logits, state

    def step(self, ids: np.ndarray, state: OnnxState) -> tuple[np.ndarray, OnnxState]:
        """ids (B,) -> logits (B, outputs), the new state. A full window keeps its last context - stride
        characters and is read again from the zero state, with `ids` after them."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.window and state.window.shape[1] == self.window["context"]:
            return self.prefill(np.concatenate([state.window[:, self.window["stride"]:], ids[:, None]], 1))
        return self._run(ids, state)

    def start_ids(self, prime: str) -> list[int]:
        """The prime's ids; without a prime, a line break (or the first character), as the sampler starts."""
        if prime:
            return self.tok.encode(prime, unknown="bytes" if self.tok.byte_fallback else "error").tolist()
        return [self.tok.encode("\n")[0] if "\n" in self.tok.chars else 0]

    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, n: int = 1) -> list[str]:
        """n samples as one batch, each the prime and `length` characters; greedy at temperature 0."""
        rng = np.random.default_rng(seed)
        ids = np.array([self.start_ids(prime)] * n, dtype=np.int64)
        logits, state = self.prefill(ids)
        out = []
        for i in range(length):
            if i:
                logits, state = self.step(nxt, state)
            nxt = pick(logits[:, :self.tok.n_chars], temperature, top_k, top_p, rng)
            out.append(nxt)
        return [prime + self.tok.decode(col) for col in np.array(out, dtype=np.int64).T.reshape(n, -1)]


def pick(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
         rng: np.random.Generator) -> np.ndarray:
    """(B, V) logits -> (B,) ids: argmax at temperature 0, else a draw from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    z = (logits - logits.max(-1, keepdims=True)) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        z = np.where(z < np.sort(z, -1)[:, -top_k:-top_k + 1], -np.inf, z)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, -1, kind="stable")
        ranked = np.take_along_axis(p, order, -1)
        drop = np.zeros_like(p, dtype=bool)
        np.put_along_axis(drop, order, ranked.cumsum(-1) - ranked >= top_p, -1)  # the first always stays
        p = np.where(drop, 0, p)
        p /= p.sum(-1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in p])

"""The model's one-character step as an ONNX graph (`charrnn export --format onnx`).

The graph is the family's portable step (`Family.portable`) traced by torch.onnx.export's TorchScript
path (`dynamo=False`): it needs nothing beyond onnx, runs offline, takes under a second and writes
the same bytes for the same weights; the torch.export path would add onnxscript and several seconds.

    inputs:  ids (batch,) int64, then the state's tensors (e.g. h, c: (layers, batch, hidden))
    outputs: logits (batch, outputs) over the corpus's characters, then new_h, new_c, ...

The file is self-contained: its metadata_props hold `charrnn` (JSON: the format, the model config,
the state's names, shapes and dtypes, the window rule of a model that reads windows, and what the
model is) and `tokenizer` (the run's tokenizer.json). charrnn/onnx_runtime.py is the loop that samples
from it; `OnnxEngine` puts that loop behind the sampler (`charrnn sample --engine onnxruntime`).
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .extras import optional
from .families import portable_step
from .onnx_runtime import FORMAT, OnnxModel, OnnxState
from .tokenizer import CharTokenizer

OPSET = 17  # LayerNormalization; ONNX Runtime 1.18 and later run it
EXAMPLE_BATCH = 2  # traced with two streams so that nothing specialises to one


def step_graph(model: torch.nn.Module, tok: CharTokenizer, about: dict[str, Any] | None = None) -> bytes:
    """The serialized ONNX model of `model`'s step, its metadata included."""
    onnx = optional("onnx")
    portable = portable_step(model)
    names = [s.name for s in portable.state]
    inputs, outputs = ["ids", *names], ["logits", *(f"new_{n}" for n in names)]
    example = [torch.zeros(EXAMPLE_BATCH, dtype=torch.long)]
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
    for spec in portable.state:
        shape = [EXAMPLE_BATCH if d == "batch" else d for d in spec.shape]
        example.append(torch.zeros(shape, dtype=getattr(torch, spec.dtype)))
        axes[spec.name] = axes[f"new_{spec.name}"] = {spec.shape.index("batch"): "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript path's deprecation notice, tracer warnings
        torch.onnx.export(portable.module, tuple(example), buf, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"format": FORMAT, "model": model.config.to_dict(), "outputs": model.config.outputs,
            "state": [asdict(s) for s in portable.state], "window": portable.window, "about": about or {}}
    onnx.helper.set_model_props(proto, {"charrnn": json.dumps(meta, ensure_ascii=False), "tokenizer": tok.to_str()})
    return proto.SerializeToString()


def quantize_int8(graph: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantisation of a step graph: int8 weights, activations quantised on the
    fly (MatMulInteger). Approximate, as the sampler's `--weights int8`."""
    onnx = optional("onnx")
    quantization = optional("onnxruntime.quantization")
    proto = _gemm_as_matmul(onnx.load_from_string(graph))
    props = {p.key: p.value for p in proto.metadata_props}
    with tempfile.TemporaryDirectory(prefix="charrnn-onnx-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # its advice to pre-process the graph, on the root logger
            try:
                quantization.quantize_dynamic(src, dst, weight_type=quantization.QuantType.QInt8, per_channel=True)
            finally:
                logging.disable(logging.NOTSET)
        out = onnx.load(dst)
    onnx.helper.set_model_props(out, props)
    return out.SerializeToString()


def _gemm_as_matmul(proto):
    """Each Gemm(x, W, b, transB=1) on a constant W as MatMul(x, W^T) + b: ONNX Runtime's dynamic
    quantisation turns MatMul into its int8 form, and leaves Gemm (which a 2-D nn.Linear exports to) in fp32."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in consts or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(consts[node.input[1]])
        w_name = f"{node.input[1]}__matmul"
        if w_name not in consts:
            consts[w_name] = numpy_helper.from_array(np.ascontiguousarray(w.T if attrs.get("transB", 0) else w), w_name)
            graph.initializer.append(consts[w_name])
        if len(node.input) > 2 and node.input[2]:
            product = f"{node.output[0]}__product"
            nodes += [helper.make_node("MatMul", [node.input[0], w_name], [product]),
                      helper.make_node("Add", [product, node.input[2]], [node.output[0]])]
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return proto


class OnnxEngine:
    """The sampler's prefill and step, run by ONNX Runtime on `model`'s exported step: torch tensors in
    and out, so the sampler's loop (and its random draws) are the same whatever runs the step."""

    def __init__(self, model: torch.nn.Module, tok: CharTokenizer, weights: str = "fp32", threads: int | None = None):
        graph = step_graph(model, tok)
        self.runtime = OnnxModel(quantize_int8(graph) if weights == "int8" else graph,
                                 threads=threads or torch.get_num_threads())

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, OnnxState]:
        logits, state = self.runtime.prefill(idx.cpu().numpy())
        return torch.from_numpy(logits), state

    def step(self, idx: torch.Tensor, state: OnnxState) -> tuple[torch.Tensor, OnnxState]:
        logits, state = self.runtime.step(idx.cpu().numpy(), state)
        return torch.from_numpy(logits), state

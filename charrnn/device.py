"""Where a model runs and in what precision: device resolution, autocast, and the fp16 grad scaler."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from .errors import CharrnnError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharrnnError("--device mps: no MPS device is available")
    if name not in DEVICES:
        raise CharrnnError(f"unknown device {name!r}")
    return torch.device(name)


def cpu_name() -> str:
    """The processor's model name, for records of where a number was measured."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on a CPU with native bf16 or a CUDA GPU that supports it, else fp16 on CUDA, else fp32."""
    if name not in PRECISIONS:
        raise CharrnnError(f"unknown precision {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_supports_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise CharrnnError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        # oneDNN has no bf16 LSTM without native support, and emulated bf16 matmuls are ~300x slower
        raise CharrnnError("--precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); use fp32")
    return name


def autocast(device: torch.device, precision: str):
    """The mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs as one fused kernel here: on CUDA and on the CPU (torch >= 2.4 has one for
    both), where it skips a step on the device's own flag. On a CPU the per-tensor default takes about
    three times as long, 4-8 % of a small model's step on the Xeon measured (benchmarks/README.md)."""
    return device.type in ("cuda", "cpu")


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")

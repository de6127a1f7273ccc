"""Where a model runs and in what precision: device resolution, the precision `auto` picks, autocast, the
fp16 gradient scaler, and the TF32 policy.

`--precision auto` means native reduced precision or none:
- CPU: bf16 where the CPU has it natively (AVX-512 BF16 or AMX-BF16 in its flags), else fp32. oneDNN's own
  probe says yes on every AVX-512 CPU, where bf16 is emulated and slower than fp32, so the flags decide.
  Where they cannot be read (not Linux) the answer is fp32, which is never wrong.
- CUDA: bf16 on compute capability 8.0 and newer (Ampere on), which have bf16 units; fp16 with a gradient
  scaler below that (Volta, Turing), where bf16 would be emulated. torch.cuda.is_bf16_supported() counts
  emulation by default, so the capability decides.
- MPS: fp32. Autocast on MPS covers fewer ops than on CUDA and nothing about it was measured here; fp16
  or bf16 can be asked for explicitly.

TF32: off. On Ampere and newer torch computes cuDNN's RNNs and convolutions in TF32 by default but
matmuls in full fp32; charrnn turns cuDNN's TF32 off too (`apply_tf32_policy`), so `--precision fp32`
is IEEE fp32 everywhere and gives the CPU's numbers to rounding. The fast path there is mixed precision,
which `auto` picks.
"""

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
            apply_tf32_policy()
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
    if name == "cuda":
        apply_tf32_policy()
    return torch.device(name)


CPUINFO = Path("/proc/cpuinfo")  # Linux only: elsewhere the fields below are unknown
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 flags of CPUs with bf16 arithmetic


def _cpuinfo(field: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The value of the first line of /proc/cpuinfo that starts with `field`."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(field):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The processor's model name, for records of where a number was measured."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def machine_name(device: torch.device | str) -> str:
    """Where a run trains, for its records: the processor's model name, and the GPU's on CUDA."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)}, {cpu_name()}"
    return cpu_name()


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`flags` in /proc/cpuinfo); none elsewhere."""
    return frozenset((_cpuinfo("flags", cpuinfo) or "").split())


def cpu_supports_bf16() -> bool:
    """Native bf16 here: AVX-512 BF16 or AMX-BF16 among the CPU's flags, and oneDNN built in."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags()) and torch.backends.mkldnn.is_available()


NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA GPUs with bf16 units


def cuda_supports_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU: compute capability 8.0 or newer."""
    return torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> native reduced precision where there is one (see the module's note), else fp32; an
    explicit choice this device cannot run is one line."""
    if name not in PRECISIONS:
        raise CharrnnError(f"unknown precision {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_supports_bf16(device) else "fp16"
        if device.type == "cpu" and cpu_supports_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        # oneDNN has no fp16 LSTM without native fp16, and nothing was measured where it has
        raise CharrnnError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        # oneDNN has no bf16 LSTM without native support, and emulated bf16 matmuls are far slower than fp32
        raise CharrnnError("--precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); use fp32")
    if name == "bf16" and device.type == "cuda" and not cuda_supports_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise CharrnnError(f"--precision bf16: this GPU (compute capability {major}.{minor}) has no native bf16 "
                           f"(8.0 and newer have); use fp16 or fp32")
    return name


def apply_tf32_policy() -> None:
    """TF32 off in cuDNN and in matmuls: fp32 means fp32 (see the module's note). Process-wide, as torch's
    own flags are; every path that puts charrnn on a CUDA device calls it."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def autocast(device: torch.device, precision: str):
    """The mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs as one fused kernel here: on CUDA and on the CPU (torch >= 2.4 has one for
    both), where it skips a step on the device's own flag, so a step never waits to read whether its
    gradients were finite."""
    return device.type in ("cuda", "cpu")


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# The fp16 scaler halves its scale at each overflow. Below this the gradients overflow even unscaled:
# no longer the scaler's ordinary business, but a run going wrong (trainer.py stops it).
MIN_LOSS_SCALE = 1.0

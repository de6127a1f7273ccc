"""Will it fit? The memory a training run, an evaluation or a sampling batch needs, estimated from the
configs before anything is allocated, against what this machine has free.

A size far beyond the machine (`--hidden 1000000`, `-n 10000000`) is then one line at once, not an
allocator traceback after minutes of swapping. The estimates are deliberately plain (fp32 weights,
gradients and AdamW's two moments, the activations one micro-batch keeps for its backward pass) and
err low rather than high: a run they let through can still be too big, but one they refuse could
never have run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import CharrnnError
from .evaluate import EVAL_LENGTH, EVAL_STREAMS, eval_batch
from .families import family_of

FLOAT = 4  # bytes: the estimates count fp32; bf16 autocast keeps fp32 master weights anyway
# weights + gradients + AdamW's two moments, and one more copy for the sampling step validation prints
TRAIN_BYTES_PER_PARAM = 5 * FLOAT
CHARS_KEPT_BYTES = 64  # a generated character kept in Python until the sample is returned


@dataclass
class Need:
    weights: int  # bytes: parameters and what training keeps per parameter
    activations: int  # bytes: the largest batch's working memory

    @property
    def total(self) -> int:
        return self.weights + self.activations


def eval_shape(c: ModelConfig) -> tuple[int, int]:
    """(rows, positions) of one validation pass: EVAL_STREAMS streams read a chunk at a time, or as many of
    the windows of a model that reads windows (all of its context) as fit; see evaluate.py."""
    window = family_of(c.model).context(c)
    if window is None:
        return EVAL_STREAMS, eval_batch(c.outputs, EVAL_STREAMS, EVAL_LENGTH)
    return eval_batch(c.outputs, window, EVAL_STREAMS), window


def training_need(c: ModelConfig, rows: int, seq_len: int) -> Need:
    """A training run: `rows` streams (or windows) of `seq_len` per micro-batch, and validation."""
    fam = family_of(c.model)
    act = max(fam.activation_floats(c, rows, seq_len, training=True),
              fam.activation_floats(c, *eval_shape(c), training=False))
    return Need(fam.param_count(c) * TRAIN_BYTES_PER_PARAM, act * FLOAT)


def sampling_need(c: ModelConfig, streams: int, prime_len: int, kept_chars: int = 0) -> Need:
    """`streams` samples at once: the weights (and the step's copy), reading the prime (a window of it, or
    a chunk at a time), each stream's state and logits, and `kept_chars` characters held until returned."""
    fam = family_of(c.model)
    prime = max(1, fam.prime_pass(c, prime_len))
    act = (fam.activation_floats(c, streams, prime, training=False) + 2 * fam.sampling_state_floats(c, streams)
           + 4 * streams * c.outputs) * FLOAT + streams * prime_len * 8 + kept_chars * CHARS_KEPT_BYTES
    return Need(fam.param_count(c) * 2 * FLOAT, act)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and anything else: unknown


def host_available() -> int | None:
    """Bytes of RAM this process could still get: MemAvailable, or less under a cgroup's limit."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < 1 << 60:  # v1 says "no limit" with a huge number
            found.append(max(lim - used, 0))
    if not found:  # not Linux: the physical memory is all we know
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def available(device: torch.device) -> int | None:
    """Free bytes where the work happens: the GPU's free memory, else the host's."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_available()


def fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def check(need: Need, device: torch.device, what: str, hint: str) -> None:
    """Refuse with one line when `need` exceeds what `device` has free. `what` names the work
    ("this run", "4 samples at once"), `hint` says what to lower."""
    free = available(device)
    if free is None or need.total <= free:
        return
    raise CharrnnError(
        f"{what} needs about {fmt_bytes(need.total)} of memory (model {fmt_bytes(need.weights)}, working memory "
        f"{fmt_bytes(need.activations)}), more than the {fmt_bytes(free)} free on {device.type}: {hint}")

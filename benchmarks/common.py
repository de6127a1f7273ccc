"""What every benchmark section shares: timing, the machine's description, rows, bars, synthetic text.

A section returns a `Section`: rows (what was measured, each with its number or the reason there is
none) and bars (a target, the measured value, and whether it was met). Nothing here ever invents a
number: a row that cannot be measured on this machine says why, with `value=None`.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from charrnn.checkpoint import read_config, read_metrics
from charrnn.corpora import resolve_corpus
from charrnn.device import cpu_flags, cpu_name, cpu_supports_bf16

NOT_SUPPORTED_BF16 = "not supported on this CPU (no native bf16: AVX-512 BF16 or AMX)"


@dataclass
class Row:
    name: str
    value: float | None  # None: not measured, `note` says why
    unit: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)  # the numbers behind the value (times, sizes, ratios)


@dataclass
class Bar:
    name: str
    target: str  # e.g. ">= 0.95x the bare loop"
    measured: float | None
    met: bool | None  # None: could not be measured here
    note: str = ""


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, *args, **kw) -> Row:
        r = Row(*args, **kw)
        self.rows.append(r)
        return r

    def bar(self, name: str, target: str, measured: float | None, ok: Callable[[float], bool], note: str = "") -> Bar:
        b = Bar(name, target, measured, None if measured is None else bool(ok(measured)), note)
        self.bars.append(b)
        return b

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "bars": [asdict(b) for b in self.bars],
                "seconds": round(self.seconds, 1)}


# What holds each library's kernels to an ISA (children inherit it): on a CPU with native bf16, a
# stand-in for one without, such as the AMD EPYC (Zen 1) these defaults must also win on
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def emulate_isa(isa: str, where: dict) -> None:
    """Hold this process's children to `isa` and mark `where` (the machine's record) as emulating it."""
    os.environ.update(ISA_ENV[isa])
    where["emulated_isa"] = isa


def machine() -> dict:
    """What the numbers were measured on."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni") if f in flags]
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "isa": isa,
            "torch": torch.__version__, "native_bf16": cpu_supports_bf16(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def command_line(how: str, argv: list[str] | None = None) -> str:
    """How this run was started, as a reader would type it again: `how` ("python benchmarks/quality.py") and
    the arguments (`argv`, else this process's)."""
    return " ".join([how, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def spread(values: list[float]) -> dict:
    """The median and range of several runs' figures (a claim is stated from the median)."""
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def record(path: Path, row: dict) -> None:
    """Print a row and append it to a benchmark's JSON-lines file."""
    print(json.dumps(row), flush=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def best_time(fn: Callable[[], object], repeat: int = 5, number: int = 1, warmup: int = 1) -> float:
    """Seconds per call of `fn`: the best of `repeat` timings of `number` calls (noise only adds time)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


# --- synthetic text --------------------------------------------------------------------------------
WORDS = ("the king queen lord shall not be what is this my good sir and to of with thee thou art hath come go "
         "now here there love night day speak know well why O honour noble gentle heaven death sweet fair").split()
RARE = ["café", "naïve", "—", "’", "“", "”", "é", "ü", "😀", "汉字"]  # the non-ASCII part of "ASCII-heavy"


def play_text(n_chars: int, seed: int = 0, rare_every: int = 400) -> str:
    """Play-like text (speakers, lines, punctuation), mostly ASCII: about one word in `rare_every` is
    non-ASCII (accents, dashes, curly quotes, an emoji, CJK), so no encoder can take an ASCII-only path."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        speaker = rng.choice(["KING", "QUEEN", "LORD", "FOOL", "ROMEO", "JULIET"])
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(RARE) if rng.randrange(rare_every) == 0 else rng.choice(WORDS)
                     for _ in range(rng.randint(3, 10))]
            lines.append(" ".join(words).capitalize() + rng.choice([",", ".", "!", "?", ";"]))
        block = f"{speaker}:\n" + "\n".join(lines) + "\n\n"
        out.append(block)
        size += len(block)
    return "".join(out)[:n_chars]


def write_corpus(path: Path, n_bytes: int, seed: int = 0) -> Path:
    """A UTF-8 file of about `n_bytes`: a 4 MB block of `play_text`, repeated (fast for a 1 GB file)."""
    block = play_text(min(n_bytes, 4 << 20), seed).encode("utf-8")
    with open(path, "wb") as f:
        written = 0
        while written < n_bytes:
            # never cut a multi-byte character in half: 'ignore' drops a torn one at the end
            piece = block[: n_bytes - written].decode("utf-8", "ignore").encode("utf-8")
            if not piece:
                break
            f.write(piece)
            written += len(piece)
    return path


def python_sources(path: Path, limit: int = 5_000_000) -> Path:
    """A corpus of Python source: the installed interpreter's standard library, concatenated (.py files
    in a seeded shuffled order, cut at `limit` characters). Built on the machine at run time, never
    stored in the repository; the same interpreter gives the same text."""
    return source_files(path, sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")), limit)


def c_headers(path: Path, limit: int = 3_000_000) -> Path:
    """A corpus of C: the system's headers (/usr/include/**/*.h), as `python_sources` concatenates .py
    files. Which headers there are depends on the packages installed, so the text differs between
    machines; the row records its size."""
    return source_files(path, sorted(Path("/usr/include").rglob("*.h")), limit)


def source_files(path: Path, files: list[Path], limit: int) -> Path:
    """`files` in a seeded shuffled order (in name order the validation split would be one package's
    tables), the UTF-8 ones, joined by newlines and cut at `limit` characters, written to `path`."""
    files = list(files)
    random.Random(0).shuffle(files)
    parts, size = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text) + 1
        if size >= limit:
            break
    path.write_text("\n".join(parts)[:limit], encoding="utf-8")
    return path


def bench_corpus(name: str, work: Path) -> Path:
    """A corpus by name: `python-5mb` (or `python`, the same), `python-50mb`, ...: that many MB of
    `python_sources`; `c-3mb` (or `c`), ...: of `c_headers`; each built once under `work`. Anything else
    is a catalog name or a path."""
    builders = {"python": (python_sources, "python-stdlib", 5), "c": (c_headers, "c-headers", 3)}
    kind, _, size = name.partition("-")
    if kind in builders and (not size or (size.endswith("mb") and size[:-2].isdigit())):
        build, stem, default_mb = builders[kind]
        mb = int(size[:-2]) if size else default_mb
        path = work / f"{stem}-{mb}mb.txt"
        return path if path.is_file() else build(path, mb * 1_000_000)
    return resolve_corpus(name)


def train_and_score(corpus: Path, budget: str, run_dir: Path, settings: list[str]) -> dict:
    """`charrnn train CORPUS --max-time BUDGET [settings]` into a fresh `run_dir`, then `charrnn eval` of its
    best checkpoint, each in a child process of this checkout; what the run chose and scored."""
    checkout = Path(__file__).resolve().parent.parent
    charrnn = [sys.executable, "-m", "charrnn"]
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(charrnn + ["train", str(corpus), "--max-time", budget, "--out", str(run_dir), "--quiet",
                              *settings], check=True, cwd=checkout)
    wall = time.perf_counter() - t0
    result = json.loads(subprocess.run(charrnn + ["eval", str(run_dir), str(corpus), "--json"], check=True,
                                       capture_output=True, text=True, cwd=checkout).stdout)
    config = read_config(run_dir)
    records = read_metrics(run_dir)
    last = [r for r in records if r["kind"] == "train"][-1]
    chars = last["step"] * config["train"]["batch_size"] * config["train"]["seq_len"]
    return {"command": " ".join(["charrnn", "train", corpus.name, "--max-time", budget, *settings]),
            "val_loss": result["loss_nats"], "wall_s": wall, "steps": last["step"], "elapsed_s": last["elapsed"],
            "epochs": round(chars / config["run"]["train_chars"], 2), "model": config["model"],
            "train": {k: config["train"][k] for k in ("batch_size", "seq_len", "lr", "warmup_steps")},
            "preset": config["run"].get("preset"), "precision": config["precision"], "params": config["params"],
            "validations": sum(r["kind"] == "val" for r in records)}

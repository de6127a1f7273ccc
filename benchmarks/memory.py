"""5. Memory: peak RSS of `charrnn train` on a 1 GB generated corpus against a 10 MB one.

Each run is its own child process (`charrnn train ...`), which reports its own peak resident set
(VmHWM, read as it exits; `ru_maxrss` where there is no /proc): hashing, the vocabulary pass, encoding into the id cache, a few
training steps and a validation pass. The corpus is streamed in chunks and trained from a memmap, so
the peak must not grow with the corpus beyond the memmap pages actually touched. The validation split
is kept small (`--val-frac 0.0001`: 100k characters of the 1 GB corpus) so that the run takes a
minute, not hours; validation reads its split through the same memmap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Section, write_corpus

REPO = Path(__file__).resolve().parent.parent


# The child reports its own high-water mark (VmHWM) as it exits. ru_maxrss from wait4 is not enough on its
# own: Linux carries the parent's peak across fork and exec into the child's ru_maxrss, so a benchmark
# process that has just encoded 100 MB would be measured, not charrnn.
_LAUNCH = """
import atexit, runpy, sys
out = sys.argv[1]
def report():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kb)
atexit.register(report)
sys.argv = ["charrnn"] + sys.argv[2:]
runpy.run_module("charrnn", run_name="__main__", alter_sys=True)
"""


def _peak_rss(corpus: Path, out: Path) -> tuple[float, float, float]:
    """(peak RSS in MiB, ru_maxrss in MiB, wall seconds) of one `charrnn train` child process."""
    args = ["train", str(corpus), "--out", str(out), "--model", "lstm", "--layers", "1", "--hidden", "128",
            "--embed", "32", "--batch-size", "16", "--seq-len", "64", "--max-steps", "5", "--val-frac", "0.0001",
            "--precision", "fp32", "--device", "cpu", "--quiet"]
    hwm_file = out.parent / f"{out.name}.hwm"
    use_proc = Path("/proc/self/status").is_file()
    cmd = [sys.executable, "-c", _LAUNCH, str(hwm_file), *args] if use_proc else \
        [sys.executable, "-m", "charrnn", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen so
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-len(args):])} failed: {err.strip()[-500:]}")
    maxrss = usage.ru_maxrss / 1024  # KiB on Linux
    peak = int(hwm_file.read_text()) / 1024 if use_proc else maxrss
    return peak, maxrss, time.perf_counter() - t0


def measure(quick: bool = False) -> Section:
    sec = Section("memory")
    small_bytes, big_bytes = ((1 << 20), (20 << 20)) if quick else ((10 << 20), (1 << 30))
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        tmp = Path(tmp)
        rss = {}
        for name, n in (("small", small_bytes), ("big", big_bytes)):
            corpus = write_corpus(tmp / f"{name}.txt", n, seed=2)
            rss[name], maxrss, wall = _peak_rss(corpus, tmp / f"run-{name}")
            sec.row(f"peak RSS, `charrnn train` on {n / 1e6:,.0f} MB", round(rss[name], 1), "MiB",
                    f"{wall:.1f} s wall", {"corpus_bytes": n, "wall_s": round(wall, 1),
                                           "ru_maxrss_mib": round(maxrss, 1)})
            corpus.unlink()  # a 1 GB file and its 2 GB id cache need not sit on disk together for long
            for cache in (tmp / f"run-{name}" / "cache").glob("*"):
                cache.unlink()
    growth = rss["big"] - rss["small"]
    sec.row("growth", round(growth, 1), "MiB", f"{big_bytes / small_bytes:.0f}x the corpus")
    sec.bar(f"peak RSS growth, {big_bytes / 1e6:,.0f} MB vs {small_bytes / 1e6:,.0f} MB corpus", "<= 200 MiB",
            round(growth, 1), lambda g: g <= 200)
    return sec

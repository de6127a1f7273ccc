"""`charrnn serve` under load: one batched step for every stream, against one request at a time, in the same run.

    python -m benchmarks.serve            # about 4 minutes on 2 cores; appends a row to benchmarks/serve.jsonl
    python -m benchmarks.serve --quick    # a 1x64 LSTM, 1 and 8 clients: seconds (checks it runs; records nothing)

A 2x512 LSTM (fresh weights: speed does not depend on what a model has learnt; `charrnn train --max-steps 1`
writes its run folder) is served by `charrnn serve` in a child process, once as it comes (batching) and once
with `--no-batching`, fp32 step weights both times (the server's default). For 1, 8, 32 and 128 concurrent
clients, each client asks `--rounds` streamed completions of 200 characters, one after another (temperature 1,
a seed each). Measured, per number of clients: aggregate characters per second (every character received,
over the time from the first request to the last character), and the p50 and p99 over requests of the time
to the first character and to the last.

The clients are asyncio sockets in this process speaking plain HTTP/1.0 (no client library's overhead), so
on a 2-core machine they share the CPU with the server, as users on the same machine would.

Bars (issue 27), on the batching server: at 32 clients the aggregate is at least 8x its own one-client
aggregate, and the p99 time to the first character is under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import command_line, machine, write_corpus

HERE = Path(__file__).resolve().parent
PROMPT = "KING:\n"


def make_run(work: Path, layers: int, hidden: int) -> Path:
    corpus = write_corpus(work / "play.txt", 200_000)
    run = work / "run"
    subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--model", "lstm", "--layers", str(layers),
                    "--hidden", str(hidden), "--embed", "128", "--batch-size", "4", "--seq-len", "16", "--max-steps",
                    "1", "--device", "cpu", "--precision", "fp32", "--out", str(run), "--quiet", "--sample-len", "0"],
                   check=True)
    return run


class Server:
    """`charrnn serve RUN --port 0 ARGS` in a child process."""

    def __init__(self, run: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0",
                                      "--max-queue", "1024", *args], stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(m.group(1))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def complete(port: int, chars: int, seed: int) -> dict:
    """One streamed completion: when it was asked, when its first and last characters came, how many."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"prompt": PROMPT, "max_tokens": chars, "temperature": 1.0, "seed": seed,
                       "stream": True}).encode()
    writer.write(b"POST /v1/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    first = last = None
    got, rest = 0, b""
    while data := await reader.read(65536):
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.startswith(b"data: {"):
                text = json.loads(line[6:])["choices"][0]["text"]
                if text:
                    last = time.perf_counter()
                    first = first or last
                    got += len(text)
    writer.close()
    if got != chars:
        raise SystemExit(f"a request got {got} characters, not {chars}")
    return {"start": t0, "first": first - t0, "last": last - t0, "end": last, "chars": got}


async def load(port: int, clients: int, rounds: int, chars: int) -> dict:
    async def client(k: int) -> list[dict]:
        return [await complete(port, chars, seed=k * rounds + r) for r in range(rounds)]

    done = [r for rs in await asyncio.gather(*(client(k) for k in range(clients))) for r in rs]
    wall = max(r["end"] for r in done) - min(r["start"] for r in done)
    first, last = np.array([r["first"] for r in done]), np.array([r["last"] for r in done])
    return {"chars_per_s": round(sum(r["chars"] for r in done) / wall, 1), "requests": len(done),
            "first_p50_ms": round(1000 * float(np.percentile(first, 50)), 1),
            "first_p99_ms": round(1000 * float(np.percentile(first, 99)), 1),
            "last_p50_ms": round(1000 * float(np.percentile(last, 50)), 1),
            "last_p99_ms": round(1000 * float(np.percentile(last, 99)), 1)}


def measure(run: Path, batching: bool, levels: list[int], rounds: int, chars: int) -> dict[int, dict]:
    server = Server(run, "--batching" if batching else "--no-batching")
    try:
        asyncio.run(load(server.port, 1, 1, chars))  # warm: the first step builds the stepper
        return {c: asyncio.run(load(server.port, c, rounds, chars)) for c in levels}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 1x64 LSTM, 1 and 8 clients, one round; nothing recorded")
    p.add_argument("--rounds", type=int, default=3, help="completions each client asks, one after another")
    p.add_argument("--chars", type=int, default=200, help="characters each completion asks for")
    p.add_argument("--out", type=Path, default=HERE / "serve.jsonl", help="the row is appended here")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    layers, hidden = (1, 64) if args.quick else (2, 512)
    levels = [1, 8] if args.quick else [1, 8, 32, 128]
    rounds = 1 if args.quick else args.rounds
    where = machine()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine
    print(f"{where['cpu']}, {where['cpus']} CPUs, bf16 native: {where['native_bf16']}; LSTM {layers}x{hidden}, "
          f"{args.chars} characters per request, {rounds} round(s)")
    with tempfile.TemporaryDirectory(prefix="charrnn-serve-bench-") as tmp:
        run = make_run(Path(tmp), layers, hidden)
        on = measure(run, True, levels, rounds, args.chars)
        off = measure(run, False, levels, rounds, args.chars)
    rows = [{"clients": c, "batching": on[c], "one_at_a_time": off[c],
             "batching_over_one_at_a_time": round(on[c]["chars_per_s"] / off[c]["chars_per_s"], 2),
             "over_one_client": round(on[c]["chars_per_s"] / on[1]["chars_per_s"], 2)} for c in levels]
    print(f"{'clients':>7}  {'batching: chars/s':>17} {'first p50/p99 ms':>17} {'last p50/p99 ms':>17}  "
          f"{'one at a time: chars/s':>22} {'first p50/p99 ms':>17} {'last p50/p99 ms':>17}  {'ratio':>6}")
    def times(m: dict) -> str:
        return (f"{m['first_p50_ms']:>8,.0f}/{m['first_p99_ms']:<8,.0f} "
                f"{m['last_p50_ms']:>8,.0f}/{m['last_p99_ms']:<8,.0f}")

    for r in rows:
        b, o = r["batching"], r["one_at_a_time"]
        print(f"{r['clients']:>7}  {b['chars_per_s']:>17,.0f} {times(b)}  {o['chars_per_s']:>22,.0f} {times(o)}  "
              f"{r['batching_over_one_at_a_time']:>5.1f}x")
    bars = []
    if 32 in on:
        gain, p99 = rows[levels.index(32)]["over_one_client"], on[32]["first_p99_ms"]
        bars = [{"bar": "32 clients: aggregate >= 8x one client's", "measured": gain, "met": gain >= 8},
                {"bar": "32 clients: p99 time to first character < 300 ms", "measured": p99, "met": p99 < 300}]
        for bar in bars:
            print(f"{bar['bar']}: {bar['measured']} -> {'met' if bar['met'] else 'NOT met'}")
    if not (args.quick or args.no_record):  # a quick run checks the script; its numbers are not a record
        row = {"date": time.strftime("%Y-%m-%d"), "machine": where,
               "command": command_line("python -m benchmarks.serve", argv),
               "model": f"lstm {layers}x{hidden}", "weights": "fp32", "chars": args.chars,
               "rounds": rounds, "load_before": load_before,
               "rows": rows, "bars": bars}
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The worker behind `charrnn serve`: one thread owns the model and advances every active stream by one
character per batched step. No HTTP here: requests come in as `Job`s, text goes out as `Piece`s through
a callback, so tests can drive a worker step by step.

An RNN's state has one fixed size per stream, so streams at different positions share a step: a new
request's prompt is read on its own (`prefill`), then its n streams join the batch (their states are
concatenated on the batch dimension, `Family.join_states`); a stream that finishes, or whose request was
cancelled (its client went away), leaves before the next step and its rows are dropped from the state
(`Family.state_rows`). A step reads the weights once for all B streams, which is why it costs far less than
B steps of one (benchmarks/serve.py). A family whose streams cannot share a step (`joins_batches` False:
the Transformer, whose key/value cache has one length for the whole batch) is served one request at a
time, its n choices batched together.

The sampling is the Sampler's: its prefill and step (the same weights), `choose` on the logits, and each
request's own generator, which draws noise for all of its n streams every step (`exp_noise`) whichever
have finished, as `Sampler.sample_many` does. So a seeded request is reproducible, and a greedy one
(temperature 0) gives the text `charrnn sample -t 0` gives. Streams with the same temperature, top-k and
top-p are filtered as one block.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import one_line
from .families import family_of
from .sampler import Sampler, StopWatch, choose, exp_noise, new_generator, start_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """What one request asks for; the caller has checked it (completions.py checks what clients send)."""

    prompt_ids: tuple[int, ...] = ()  # the encoded prompt; empty: start as a sample without a prime does
    n: int = 1  # streams, all from the same prompt
    max_tokens: int = 16  # characters per stream
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()  # a stream ends at the first of these (not included)


@dataclass
class Piece:
    """New text of stream `index` of `job`. `finish` is set on a stream's last piece: "stop" (a stop
    string), "length" (max_tokens characters) or "error" (the worker failed; `text` says why)."""

    job: Job
    index: int
    text: str
    finish: str | None = None


class Busy(Exception):
    """The queue is full, or the worker is closing: nothing was taken."""


class Job:
    """One request inside the worker. `tag` is the caller's own (the server keeps its listener there)."""

    def __init__(self, request: Completion, tag: object = None):
        self.request = request
        self.tag = tag
        self.cancelled = False  # set through Worker.cancel (any thread); its streams leave before the next step
        self.done = False  # set by the worker: every stream finished, or the job was dropped
        self.alive: list[int] = []  # which of its n streams are in the batch, in row order
        self.made = 0  # characters each stream in the batch has made
        self.watches: list[StopWatch] = []
        self.gen: torch.Generator | None = None

    def noise(self, n_chars: int, device: torch.device) -> torch.Tensor | None:
        """This step's noise for the streams still alive (drawn for all n, so each stream's draws do not
        depend on when the others finished); None when greedy."""
        if self.request.temperature == 0:
            return None
        noise = exp_noise(self.gen, self.request.n, n_chars, device)
        return noise if len(self.alive) == self.request.n else noise[self.alive]


class Worker:
    """Owns the model; `submit` and `cancel` from any thread, text arrives through `deliver(pieces)`, called
    once per step from the worker's thread (started with `start`, or driven by calling `step`).

    At most `max_streams` streams share a step; requests that do not fit wait, up to `max_queue` of them,
    and beyond that `submit` raises Busy. `batching=False` serves one request at a time (the comparison
    benchmarks/serve.py makes)."""

    def __init__(self, sampler: Sampler, deliver: Callable[[list[Piece]], None], max_streams: int = 256,
                 max_queue: int = 64, batching: bool = True):
        self.sampler = sampler
        self.deliver = deliver
        self.family = family_of(sampler.model.config.model)
        self.joins = batching and self.family.joins_batches
        self.max_streams, self.max_queue = max_streams, max_queue
        self.n_chars = sampler.tok.n_chars
        self._pending: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # the batch (touched by the worker's thread only): jobs in row order, their states, each row's next input
        self.jobs: list[Job] = []
        self._state = None
        self._ids: torch.Tensor | None = None  # (B,)
        self.rows = 0  # B: the streams whose state the worker holds
        self.dropped = 0  # streams whose request was cancelled before they finished

    # --- from any thread ----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise Busy("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise Busy(f"{len(self._pending)} requests are waiting")
            self._pending.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """Its streams leave the batch before the next step (at once, if it was still waiting)."""
        job.cancelled = True
        with self._wake:
            if job in self._pending:
                self._pending.remove(job)
                job.done = True
                self.dropped += job.request.n
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        return {"requests": len(self.jobs), "streams": self.rows, "queued": len(self._pending), "dropped": self.dropped}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="charrnn-serve-worker", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the current step; what is still in hand is dropped."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._pending or self.jobs):
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self.step()
            except Exception as e:  # (step fails requests itself; this is `deliver` failing) keep the thread alive
                log.error("charrnn serve: %s", one_line(e))

    # --- the worker's thread ----------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """One turn: drop cancelled streams, start the requests that fit, advance every stream one character."""
        pieces: list[Piece] = []
        self._drop_cancelled()
        self._admit(pieces)
        if pieces:  # new requests' first characters go out before the step
            self.deliver(pieces)
            pieces = []
        if self.jobs:
            try:
                self._advance(pieces)
            except Exception as e:  # a bug or no memory left: fail the requests in hand, keep serving
                log.error("charrnn serve: a step failed: %s", one_line(e))
                for job in self.jobs:
                    pieces += self._fail(job, e)
                self.jobs = []
                self._set(None, None)
        if pieces:
            self.deliver(pieces)

    def _set(self, state, ids: torch.Tensor | None) -> None:
        self._state, self._ids = state, ids
        self.rows = 0 if ids is None else ids.numel()

    def _keep(self, keep: list[int], state, ids: torch.Tensor) -> None:
        """Hold only batch rows `keep` of (state, ids)."""
        if not keep:
            self._set(None, None)
        elif len(keep) == ids.numel():
            self._set(state, ids)
        else:
            rows = torch.tensor(keep, device=ids.device)
            self._set(self.family.state_rows(state, rows), ids.index_select(0, rows))

    def _drop_cancelled(self) -> None:
        if not any(job.cancelled for job in self.jobs):
            return
        keep, row = [], 0
        for job in self.jobs:
            if not job.cancelled:
                keep += range(row, row + len(job.alive))
            row += len(job.alive)
        for job in self.jobs:
            if job.cancelled:
                self.dropped += len(job.alive)
                job.alive, job.done = [], True
        self.jobs = [job for job in self.jobs if not job.done]
        self._keep(keep, self._state, self._ids)

    def _admit(self, pieces: list[Piece]) -> None:
        """Start waiting requests while they fit: any when the batch is empty, else only where streams
        join a running batch and there is room."""
        while True:
            with self._wake:
                if not self._pending:
                    return
                job = self._pending[0]
                if self.jobs and not (self.joins and self.rows + job.request.n <= self.max_streams):
                    return
                self._pending.popleft()
            try:
                self._start(job, pieces)
            except Exception as e:  # as in `step`: this request fails, the others go on
                log.error("charrnn serve: a prompt failed: %s", one_line(e))
                pieces += self._fail(job, e)

    def _start(self, job: Job, pieces: list[Piece]) -> None:
        """Read the prompt once, make each stream's first character, and join the streams that go on."""
        req, device = job.request, self.sampler.device
        job.alive = list(range(req.n))
        job.watches = [StopWatch(req.stop) for _ in range(req.n)]
        if req.max_tokens == 0:
            pieces += [Piece(job, i, "", "length") for i in job.alive]
            job.alive, job.done = [], True
            return
        job.gen = new_generator(req.seed, device)
        prompt = torch.as_tensor(req.prompt_ids or start_ids(self.sampler.tok), dtype=torch.long, device=device)
        logits, state = self.sampler.read_prime(prompt[None])  # (1, T): read once, then one row per stream
        state = self.family.state_rows(state, torch.zeros(req.n, dtype=torch.long, device=device))
        logits = logits[:, : self.n_chars].float().expand(req.n, -1)
        ids = self._choose(logits, [job])
        keep = self._emit([job], ids, pieces)
        if not keep:
            return
        rows = torch.tensor(keep, device=device)
        state, ids = self.family.state_rows(state, rows), ids.index_select(0, rows)
        if self._state is None:
            self._set(state, ids)
        else:
            self._set(self.family.join_states([self._state, state]), torch.cat([self._ids, ids]))
        self.jobs.append(job)

    def _advance(self, pieces: list[Piece]) -> None:
        logits, state = self.sampler.step(self._ids, self._state)
        ids = self._choose(logits[:, : self.n_chars].float(), self.jobs)  # byte tokens are never sampled
        keep = self._emit(self.jobs, ids, pieces)
        self.jobs = [job for job in self.jobs if job.alive]
        self._keep(keep, state, ids)

    def _choose(self, logits: torch.Tensor, jobs: list[Job]) -> torch.Tensor:
        """(B, V) logits of `jobs`' rows -> (B,) next ids; rows with the same settings are one block."""
        blocks: dict[tuple, list[tuple[Job, int, int]]] = {}
        row = 0
        for job in jobs:
            r = job.request
            blocks.setdefault((r.temperature, r.top_k, r.top_p), []).append((job, row, row + len(job.alive)))
            row += len(job.alive)
        if len(blocks) == 1:
            (settings, members), = blocks.items()
            return choose(logits, *settings, self._noise(members, logits.device))
        ids = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
        for settings, members in blocks.items():
            rows = torch.cat([torch.arange(lo, hi, device=logits.device) for _, lo, hi in members])
            ids[rows] = choose(logits[rows], *settings, self._noise(members, logits.device))
        return ids

    def _noise(self, members: list[tuple[Job, int, int]], device: torch.device) -> torch.Tensor | None:
        parts = [job.noise(self.n_chars, device) for job, _, _ in members]
        return None if parts[0] is None else torch.cat(parts) if len(parts) > 1 else parts[0]

    def _emit(self, jobs: list[Job], ids: torch.Tensor, pieces: list[Piece]) -> list[int]:
        """Each stream's new character through its stop watch; the rows that go on. A job none of whose
        streams go on is done."""
        keep, row = [], 0
        chars = [self.sampler.tok.id_to_char(i) for i in ids.tolist()]
        for job in jobs:
            job.made += 1
            going = []
            for i in job.alive:
                watch = job.watches[i]
                text = watch.feed(chars[row])
                finish = "stop" if watch.stopped else "length" if job.made == job.request.max_tokens else None
                if finish == "length":
                    text += watch.flush()
                if text or finish:
                    pieces.append(Piece(job, i, text, finish))
                if finish is None:
                    going.append(i)
                    keep.append(row)
                row += 1
            job.alive = going
            job.done = not going
        return keep

    @staticmethod
    def _fail(job: Job, error: Exception) -> list[Piece]:
        streams = job.alive or range(job.request.n)
        job.alive, job.done = [], True
        return [Piece(job, i, one_line(error) or type(error).__name__, "error") for i in streams]

"""The worker behind `charrnn serve`, driven step by step without HTTP: requests join and leave one batched
step, and each stream's text is what the Sampler gives it alone (greedy: `charrnn sample -t 0`; seeded: the
same draws), for every built-in family: the RNNs share a step across requests, the Transformer takes one
request at a time."""

from __future__ import annotations

import pytest
import torch

from charrnn.batching import Busy, Completion, Job, Worker
from charrnn.families import build_model, model_config
from charrnn.sampler import Sampler
from charrnn.tokenizer import CharTokenizer
from conftest import make_text

SHAPES = {
    "lstm": dict(model="lstm", n_layers=2, hidden=24, embed=8),
    "gru": dict(model="gru", n_layers=2, hidden=24, embed=8),
    "mingru": dict(model="mingru", n_layers=2, hidden=24),
    "transformer": dict(model="transformer", n_layers=2, hidden=24, heads=2, context=16),  # windows slide in 40 chars
}
PROMPTS = ["KING:\n", "Thou art", "", "LORD:\nWhat is this, my good sir? "]


def fresh_sampler(kind: str) -> Sampler:
    """Untrained weights: the batching is exact whatever the model has learnt."""
    tok = CharTokenizer.from_chars(make_text(3000))
    torch.manual_seed(0)
    model = build_model(model_config(tok.vocab_size, n_outputs=tok.n_chars, **SHAPES[kind]))
    return Sampler(model, tok, weights="fp32")


class Texts:
    """What the worker delivers, by job: each stream's text and finish reason; the rows held after each step."""

    def __init__(self):
        self.text, self.finish = {}, {}

    def __call__(self, pieces):
        for p in pieces:
            key = (id(p.job), p.index)
            assert self.finish.get(key) is None, "a piece after its stream finished"
            self.text[key] = self.text.get(key, "") + p.text
            self.finish[key] = p.finish

    def of(self, job: Job) -> list[str]:
        return [self.text.get((id(job), i), "") for i in range(job.request.n)]

    def reasons(self, job: Job) -> list[str | None]:
        return [self.finish.get((id(job), i)) for i in range(job.request.n)]


def encode(sampler: Sampler, prompt: str) -> tuple[int, ...]:
    return tuple(int(i) for i in sampler.tok.encode(prompt)) if prompt else ()


def run_until_done(worker: Worker, jobs: list[Job], rows: list[int] | None = None, limit: int = 10_000) -> None:
    for _ in range(limit):
        if all(job.done for job in jobs):
            return
        worker.step()
        if rows is not None:
            rows.append(worker.rows)
    raise AssertionError("the worker did not finish")


@pytest.mark.parametrize("kind", list(SHAPES))
def test_requests_that_join_a_running_batch_get_what_the_sampler_gives(kind):
    sampler = fresh_sampler(kind)
    texts = Texts()
    worker = Worker(sampler, texts)
    lengths = [30, 45, 12, 40]
    jobs = [Job(Completion(encode(sampler, p), max_tokens=n, temperature=0)) for p, n in zip(PROMPTS, lengths)]
    rows: list[int] = []
    for job in jobs[:2]:
        worker.submit(job)
    for _ in range(5):  # two requests under way, then two more arrive
        worker.step()
        rows.append(worker.rows)
    for job in jobs[2:]:
        worker.submit(job)
    run_until_done(worker, jobs, rows)
    for job, prompt, n in zip(jobs, PROMPTS, lengths):
        assert texts.of(job) == [sampler.sample(prompt, n, temperature=0)[len(prompt):]]
        assert texts.reasons(job) == ["length"]
    if sampler.model.config.model == "transformer":  # one request at a time
        assert max(rows) == 1
    else:  # all four shared steps
        assert max(rows) == 4
    assert worker.rows == 0 and worker.jobs == [] and worker.stats()["queued"] == 0


def test_a_seeded_request_draws_what_the_sampler_draws():
    sampler = fresh_sampler("lstm")
    texts = Texts()
    worker = Worker(sampler, texts)
    cfg = dict(temperature=0.9, top_k=20, top_p=0.95, seed=11)
    job = Job(Completion(encode(sampler, "KING:\n"), max_tokens=60, **cfg))
    worker.submit(job)
    run_until_done(worker, [job])
    assert texts.of(job) == [sampler.sample("KING:\n", 60, **cfg)[len("KING:\n"):]]
    # n streams from one seed: each its own text, the same again for the same request
    again = [Job(Completion(encode(sampler, "KING:\n"), n=3, max_tokens=60, **cfg)) for _ in range(2)]
    for job in again:
        worker.submit(job)
        run_until_done(worker, [job])
    assert texts.of(again[0]) == texts.of(again[1]) and len(set(texts.of(again[0]))) == 3


def test_a_stream_that_stops_early_leaves_the_others_their_own_draws():
    sampler = fresh_sampler("lstm")
    texts = Texts()
    worker = Worker(sampler, texts)
    free = Job(Completion(encode(sampler, "KING:\n"), n=4, max_tokens=80, temperature=1.0, seed=3))
    worker.submit(free)
    run_until_done(worker, [free])
    stop = texts.of(free)[0][20:22]  # stream 0 stops after 20 characters, the others later or never
    stopped = Job(Completion(encode(sampler, "KING:\n"), n=4, max_tokens=80, temperature=1.0, seed=3, stop=(stop,)))
    worker.submit(stopped)
    run_until_done(worker, [stopped])
    for full, cut, reason in zip(texts.of(free), texts.of(stopped), texts.reasons(stopped)):
        assert cut == full.split(stop)[0] and reason == ("stop" if stop in full else "length")
    assert len(texts.of(stopped)[0]) <= 20 < max(len(t) for t in texts.of(stopped))


def test_cancelled_and_finished_streams_leave_the_state_and_the_others_go_on():
    sampler = fresh_sampler("lstm")
    texts = Texts()
    worker = Worker(sampler, texts, max_streams=8)
    a, b, c = (Job(Completion(encode(sampler, p), n=2, max_tokens=m, temperature=0))
               for p, m in (("KING:\n", 50), ("Thou art", 400), ("LORD:", 6)))
    for job in (a, b, c):
        worker.submit(job)
    waiting = Job(Completion(encode(sampler, "FOOL:"), n=4, max_tokens=5))  # no room: 6 + 4 > 8
    worker.submit(waiting)
    for _ in range(3):
        worker.step()
    assert worker.stats() == {"requests": 3, "streams": 6, "queued": 1, "dropped": 0}
    worker.cancel(waiting)  # still waiting: it leaves the queue at once
    assert waiting.done and worker.stats()["queued"] == 0 and worker.stats()["dropped"] == 4
    worker.cancel(b)  # in the middle of the batch
    worker.step()
    assert b.done and worker.rows == 4 and worker.stats()["dropped"] == 6
    run_until_done(worker, [a, c])
    assert worker.rows == 0 and worker.jobs == []
    for job, prompt, n in ((a, "KING:\n", 50), (c, "LORD:", 6)):  # the rows kept were the right ones
        assert texts.of(job) == [sampler.sample(prompt, n, temperature=0)[len(prompt):]] * 2
    assert texts.reasons(b) == [None, None] and len(texts.of(b)[0]) < 400


def test_the_queue_is_bounded_and_a_closed_worker_takes_nothing():
    worker = Worker(fresh_sampler("gru"), lambda pieces: None, max_queue=2)
    jobs = [Job(Completion(max_tokens=3)) for _ in range(3)]
    worker.submit(jobs[0])
    worker.submit(jobs[1])
    with pytest.raises(Busy):
        worker.submit(jobs[2])
    worker.cancel(jobs[0])
    worker.submit(jobs[2])
    worker.close()
    with pytest.raises(Busy):
        worker.submit(Job(Completion()))


def test_one_request_at_a_time_without_batching_and_nothing_asked_for_nothing_made():
    sampler = fresh_sampler("lstm")
    texts = Texts()
    worker = Worker(sampler, texts, batching=False)
    jobs = [Job(Completion(encode(sampler, p), n=2, max_tokens=20, temperature=0)) for p in PROMPTS[:3]]
    empty = Job(Completion(max_tokens=0, n=3))
    for job in (*jobs, empty):
        worker.submit(job)
    rows: list[int] = []
    run_until_done(worker, [*jobs, empty], rows)
    assert max(rows) == 2
    assert texts.of(empty) == ["", "", ""] and texts.reasons(empty) == ["length"] * 3
    assert texts.of(jobs[1]) == [sampler.sample(PROMPTS[1], 20, temperature=0)[len(PROMPTS[1]):]] * 2


def test_a_failing_step_fails_the_requests_in_hand_and_the_worker_serves_on(monkeypatch):
    sampler = fresh_sampler("lstm")
    texts = Texts()
    worker = Worker(sampler, texts)
    doomed = Job(Completion(encode(sampler, "KING:"), n=2, max_tokens=30, temperature=0))
    worker.submit(doomed)
    worker.step()
    step = sampler.step
    monkeypatch.setattr(sampler, "step", lambda *a: (_ for _ in ()).throw(RuntimeError("out of memory, say")))
    worker.step()
    assert doomed.done and texts.reasons(doomed) == ["error", "error"] and worker.rows == 0
    monkeypatch.setattr(sampler, "step", step)
    fine = Job(Completion(encode(sampler, "KING:"), max_tokens=30, temperature=0))
    worker.submit(fine)
    run_until_done(worker, [fine])
    assert texts.of(fine) == [sampler.sample("KING:", 30, temperature=0)[len("KING:"):]]


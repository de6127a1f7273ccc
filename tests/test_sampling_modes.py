"""Issue 31's sampling: items (whole lines; new ones; labelled by the corpus's splits), beam search (against an
exhaustive search, and greedy at width 1), the family's state reordering, a prime from a file, endless output
through a closed pipe, and min-p."""

import gc
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY

from charrnn import checkpoint as ck
from charrnn.cli import cli
from charrnn.corpus_lines import CorpusLines
from charrnn.errors import BadType, BadValue, CharrnnError
from charrnn.families import build_model, family_of, model_config
from charrnn.sampler import Sampler, filter_logits
from charrnn.tokenizer import CharTokenizer
from charrnn.training import RunOptions, train

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"
SYLLABLES = "ka lo mi ra ne to su ba ri de an el".split()


def run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def names(n: int, seed: int = 0) -> str:
    """A list corpus: one made-up name of 2 or 3 syllables per line."""
    rng = random.Random(seed)
    return "".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) + "\n" for _ in range(n))


@pytest.fixture(scope="module")
def list_run(tmp_path_factory) -> Path:
    """A tiny LSTM trained briefly on a list of names (treat it as read-only)."""
    root = tmp_path_factory.mktemp("names")
    corpus = root / "names.txt"
    corpus.write_text(names(1500), encoding="utf-8")
    out = root / "run"
    train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0),
          dict(TINY, max_steps=80))
    return out


def brute_force_label(text: str, item: str, val_frac: float) -> str:
    """A corpus line's split, the slow obvious way: every line and where it starts."""
    n_train = int(len(text) * (1 - val_frac))
    where, start = [], 0
    for line in text.split("\n"):
        if line == item:
            where.append(start)
        start += len(line) + 1
    if any(s < n_train for s in where):
        return "train"
    return "validation" if where else "new"


# --- items ----------------------------------------------------------------------------------------------
def test_new_items_are_whole_distinct_lines_none_of_them_in_the_corpus(list_run):
    corpus = set((list_run.parent / "names.txt").read_text().split("\n"))
    s = Sampler.load(list_run)
    items = s.items(40, new=True, seed=1, length=12)
    texts = [i.text for i in items]
    assert len(texts) == 40 and len(set(texts)) == 40
    assert not set(texts) & corpus
    assert all(t and "\n" not in t and len(t) <= 12 for t in texts)
    assert all(i.logprob < 0 and i.logprob_per_char == pytest.approx(i.logprob / (len(i.text) + 1)) for i in items)
    assert items == s.items(40, new=True, seed=1, length=12)  # seeded: the same items


def test_labels_agree_with_a_brute_force_check(list_run):
    text = (list_run.parent / "names.txt").read_text()
    val_frac = ck.read_config(list_run)["run"]["val_frac"]
    items = Sampler.load(list_run).items(150, label=True, seed=2, temperature=0.7)
    assert all(i.label == brute_force_label(text, i.text, val_frac) for i in items)
    assert {"train", "new"} <= {i.label for i in items}  # both answers given, so the check checks something


def test_corpus_lines_splits_crlf_and_byte_tokens():
    text = "anna\r\nbob\nbob\ncarl\ndora\nanna\neve\n\nfinn"
    n_train = text.index("carl") + 2  # the split point cuts "carl": a training line
    lines = CorpusLines.from_text(text, n_train)
    assert [lines.label(x) for x in ("anna", "bob", "carl", "dora", "eve", "finn", "", "ann", "anna\r")] == \
           ["train", "train", "train", "validation", "validation", "validation", "new", "new", "new"]
    # ids past the characters are byte tokens: their line holds a NUL and matches no item
    chars = ["\n", "a", "b"]
    by_ids = CorpusLines.from_ids(torch.tensor([1, 2, 0, 1, 5, 0, 2, 2]).numpy(), chars, 3)
    assert [by_ids.label(x) for x in ("ab", "a", "bb")] == ["train", "new", "validation"]


def test_the_split_point_and_chunks_do_not_change_the_lines(monkeypatch):
    import charrnn.corpus_lines as cl

    text = names(300, seed=3)
    whole = CorpusLines.from_text(text, 1000)
    monkeypatch.setattr(cl, "CHUNK", 7)  # lines cut across many chunks
    chunked = CorpusLines.from_text(text, 1000)
    assert (chunked.train, chunked.validation) == (whole.train, whole.validation)


def test_items_cli_label_json_and_the_attempts_limit(list_run):
    got = run("sample", list_run, "--items", "6", "--new", "--json", "--seed", "3")
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(rows) == 6 and {r["label"] for r in rows} == {"new"}
    assert set(rows[0]) == {"text", "label", "logprob", "logprob_per_char"}
    labelled = run("sample", list_run, "--items", "5", "--label", "--seed", "3").stdout.splitlines()
    assert len(labelled) == 5 and all(line.split(" ", 1)[0] in ("train", "validation", "new") for line in labelled)
    short = run("sample", list_run, "--items", "50", "--new", "--max-attempts", "3", "--seed", "3")
    assert short.exit_code == 1 and len(short.stdout.splitlines()) <= 3
    assert "of 50 new items in 3 lines drawn" in short.stderr


def test_membership_reads_the_run_s_cache_and_refuses_a_changed_corpus(list_run, tmp_path):
    corpus = list_run.parent / "names.txt"
    text = corpus.read_text()
    copy = tmp_path / "run"
    shutil.copytree(list_run, copy)
    moved = corpus.rename(tmp_path / "elsewhere.txt")
    try:  # the corpus is gone, its ids are in the run's cache
        assert Sampler.load(copy).corpus_lines().label(text.split("\n")[0]) == "train"
        shutil.rmtree(copy / ck.CACHE)
        assert "cannot be read" in one_line_error(run("sample", copy, "--items", "2", "--new"))
        corpus.write_text(text.upper(), encoding="utf-8")  # there again, but another text
        assert "has changed since" in one_line_error(run("sample", copy, "--items", "2", "--label"))
    finally:
        moved.replace(corpus)
    assert run("sample", copy, "--items", "2", "--new").exit_code == 0  # the original again: read and cached
    assert list((copy / ck.CACHE).iterdir())


# --- beam search ------------------------------------------------------------------------------------------
def tiny_sampler(kind: str, seed: int = 0, **options) -> Sampler:
    """A random model over three characters, with weights large enough to make its predictions sharp and
    dependent on the context."""
    torch.manual_seed(seed)
    model = build_model(model_config(vocab_size=3, model=kind, n_layers=1, hidden=8, **options))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return Sampler(model, CharTokenizer.from_chars("\nab", byte_fallback=False), weights="fp32")


def exhaustive(s: Sampler, prime: str, length: int) -> dict[str, float]:
    """The total log-probability of every text of `length` characters after `prime`: all of them as one batch
    through the model's own prefill and step, no search."""
    texts = ["".join(t) for t in itertools.product(s.tok.chars, repeat=length)]
    ids = torch.tensor([s.tok.encode(t).tolist() for t in texts])
    prime_ids = torch.tensor(s.tok.encode(prime)).expand(len(texts), -1)
    logits, state = family_of(s.model.config.model).read_prime(s.model, prime_ids, s.model.prefill, s.model.step)
    total = torch.zeros(len(texts), dtype=torch.float64)
    for j in range(length):
        if j:
            logits, state = s.model.step(ids[:, j - 1], state)
        total += torch.log_softmax(logits.double(), -1).gather(1, ids[:, j:j + 1])[:, 0]
    return dict(zip(texts, total.tolist()))


def ended_at(texts: dict[str, float], stop: str) -> dict[str, float]:
    """`texts` (all of one length) as a search with a stop string ends them: at the stop, when it comes (its
    probability is the sum over the texts that share the prefix), else at the length."""
    out: dict[str, float] = {}
    for t, lp in texts.items():
        cut = t.find(stop)
        key = t if cut < 0 else t[:cut + len(stop)]
        out[key] = torch.logaddexp(torch.tensor(out.get(key, float("-inf"))), torch.tensor(lp)).item()
    return out


@pytest.mark.parametrize("kind, options, length", [("lstm", {}, 4), ("mingru", {}, 4),
                                                   ("transformer", dict(heads=2, context=3), 5)])
def test_beam_search_equals_an_exhaustive_search(kind, options, length):
    # A beam as wide as the number of prefixes keeps every one: it must find exactly the best texts (the
    # Transformer's context of 3 makes its window slide, cache reordered, within the 5 + 1 characters).
    s = tiny_sampler(kind, **options)
    scores = exhaustive(s, "a", length)
    k = 3 ** (length - 1)
    best = sorted(scores, key=lambda t: -scores[t])[:k]
    found = s.beam(k=k, prime="a", length=length)
    assert [f.text[1:] for f in found] == best
    assert [f.logprob for f in found] == pytest.approx([scores[t] for t in best], abs=1e-5)


def test_beam_search_with_a_stop_string_equals_an_exhaustive_search():
    s = tiny_sampler("gru", seed=1)
    ends = ended_at(exhaustive(s, "b", 4), "\n")  # 1 + 2 + 4 + 8 texts ended by the stop, 16 by the length
    found = s.beam(k=len(ends), prime="b", length=4, stop="\n")
    assert len(found) == len(ends) == 31
    assert {f.text[1:] for f in found} == {t.removesuffix("\n") for t in ends}
    assert [f.logprob for f in found] == pytest.approx(sorted(ends.values(), reverse=True), abs=1e-5)


def test_beam_items_are_the_most_likely_new_lines_of_an_exhaustive_search():
    s = tiny_sampler("lstm", seed=2)
    lines = ended_at(exhaustive(s, "\n", 4), "\n")
    items = {t[:-1]: lp for t, lp in lines.items() if t.endswith("\n") and len(t) > 1}  # 2 + 4 + 8 lines of <= 3
    known = sorted(items, key=lambda t: -items[t])[:3:2]  # the best and the third best are "in the corpus"
    s = Sampler(s.model, s.tok, weights="fp32", corpus=CorpusLines({known[0]}, {known[1]}))
    want = [t for t in sorted(items, key=lambda t: -items[t]) if t not in known]
    found = s.items(len(want), beam=len(items), new=True, length=3)
    assert [f.text for f in found] == want and {f.label for f in found} == {None}
    assert [f.logprob for f in found] == pytest.approx([items[t] for t in want], abs=1e-5)
    labelled = s.items(3, beam=len(items), label=True, length=3)  # without --new the known ones come first
    assert [(f.text, f.label) for f in labelled][::2] == [(known[0], "train"), (known[1], "validation")]


def test_beam_1_is_greedy_and_beam_search_is_deterministic(trained_run):
    for extra in ([], ["--stop", "\n"]):
        args = ["sample", trained_run, "--prime", "KING:\n", "--length", "80", "--weights", "fp32", *extra]
        greedy = run(*args, "-t", "0")
        assert greedy.exit_code == 0 and run(*args, "--beam", "1").stdout == greedy.stdout
    three = run("sample", trained_run, "--prime", "KING:", "--length", "60", "--beam", "3", "--stop", "\n")
    assert three.exit_code == 0 and three.stdout.count("--- beam ") == 3
    assert three.stdout == run("sample", trained_run, "--prime", "KING:", "--length", "60", "--beam", "3",
                               "--stop", "\n").stdout
    texts = Sampler.load(trained_run).beam(k=3, prime="KING:", length=60, stop="\n")
    assert all("\n" not in t.text for t in texts) and texts[0].logprob >= texts[1].logprob >= texts[2].logprob


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "mingru", "minlstm", "transformer"])
def test_reordering_a_state_follows_the_streams(kind):
    """Stepping a reordered state is stepping the streams in that order, for every family."""
    options = dict(heads=2, context=4) if kind == "transformer" else {}
    s = tiny_sampler(kind, seed=3, **options)
    fam, m = family_of(kind), s.model
    primes = torch.tensor([[1, 2, 1, 0], [2, 2, 0, 1], [0, 1, 1, 2]])  # 4 characters: the next step slides a window
    index, nxt = torch.tensor([2, 0, 0, 1]), torch.tensor([1, 2, 0, 1])
    _, state = fam.read_prime(m, primes, m.prefill, m.step)
    got, _ = m.step(nxt, fam.reorder_state(m, state, index))
    want, _ = m.step(nxt, fam.read_prime(m, primes[index], m.prefill, m.step)[1])
    assert torch.allclose(got, want, atol=1e-5)


def test_the_sampler_asks_the_family_how_to_reorder_a_state():
    for name in ("sampler.py", "beam.py"):
        code = (PACKAGE / name).read_text()
        assert "KVCache" not in code and "isinstance(state" not in code and "index_select" not in code


# --- a prime from a file, endless output, min-p --------------------------------------------------------
def test_prime_file_reads_as_prime_does(trained_run, tmp_path):
    common = ["sample", trained_run, "--length", "40", "--seed", "1", "--no-stream"]
    prime = "KING:\nThe lord shall not be good.\n" * 200  # longer than a prime is read at once (4,096)
    path = tmp_path / "prime.txt"
    path.write_text(prime, encoding="utf-8")
    by_arg = run(*common, "--prime", prime)
    assert by_arg.exit_code == 0 and run(*common, "--prime-file", path).stdout == by_arg.stdout
    assert run(*common, "--prime-file", "-", input=prime.encode()).stdout == by_arg.stdout
    path.write_text("Zebra", encoding="utf-8")
    assert "'Z'" in one_line_error(run(*common, "--prime-file", path))  # the unknown-character rule
    assert run(*common, "--prime-file", path, "--unknown", "bytes").stdout.startswith("Zebra")


@pytest.mark.parametrize("content, message", [(None, "no such prime file"), (b"KING\xff\xfe", "not UTF-8"),
                                              ("fifo", "not a regular file")])
def test_a_bad_prime_file_is_one_line(trained_run, tmp_path, content, message):
    path = tmp_path / "prime.txt"
    if content == "fifo":
        os.mkfifo(path)
    elif content is not None:
        path.write_bytes(content)
    assert message in one_line_error(run("sample", trained_run, "--prime-file", path))


def test_endless_output_ends_cleanly_when_the_pipe_closes(trained_run):
    charrnn = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", str(trained_run), "--length", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "10000"], stdin=charrnn.stdout, capture_output=True, timeout=120)
    charrnn.stdout.close()  # only head reads it now
    assert charrnn.wait(timeout=60) == 0
    assert len(head.stdout) == 10000 and head.returncode == 0
    assert charrnn.stderr.read() == b""  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_an_endless_stream_keeps_no_text(trained_run):
    stream = Sampler.load(trained_run).stream(length=None, seed=0)
    used = []
    tracemalloc.start()
    try:
        for n in (1000, 2000, 3000):  # warmed up, then twice 3,000 characters more
            for _ in itertools.islice(stream, n):
                pass
            gc.collect()
            used.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert used[2] - used[1] < 10_000  # 3,000 more characters kept as pieces would take 24 kB more
    assert not torch.is_inference_mode_enabled()  # not left on for the caller while the stream is open


def test_min_p_keeps_the_characters_at_least_p_times_the_likeliest(trained_run):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))

    def kept(top_k=None, top_p=None, min_p=None):
        return torch.isfinite(filter_logits(logits, 1.0, top_k, top_p, min_p)).tolist()

    assert kept(min_p=0.29) == [[True, True, True, False]]
    assert kept(min_p=0.59) == [[True, True, False, False]]
    assert kept(min_p=0.0) == [[True] * 4] and kept(min_p=1.0) == [[True, False, False, False]]
    assert kept(min_p=0.29, top_k=2) == [[True, True, False, False]]  # both filters, composed
    assert kept(min_p=0.05, top_p=0.8) == [[True, True, False, False]]
    s = Sampler.load(trained_run, weights="fp32")
    assert s.sample(prime="KING:", length=60, min_p=1.0, seed=3) == s.sample(prime="KING:", length=60, temperature=0)


@pytest.mark.parametrize("value, error", [(-0.1, BadValue), (1.5, BadValue), (float("nan"), BadValue),
                                          ("0.1", BadType), (True, BadType)])
def test_min_p_is_checked_in_the_api(trained_run, value, error):
    with pytest.raises(error, match="min-p"):
        Sampler.load(trained_run).sample(length=5, min_p=value)


@pytest.mark.parametrize("args, message", [
    (["--min-p", "1.5"], "--min-p"), (["--min-p", "nan"], "--min-p"),
    (["--prime", "K", "--prime-file", "-"], "not both"),
    (["--new"], "--new applies to --items"), (["--json", "--label"], "applies to --items"),
    (["--max-attempts", "5"], "applies to --items"),
    (["--items", "3", "-n", "2"], "--num-samples"), (["--items", "3", "--stop", "x"], "--stop"),
    (["--items", "3", "--length", "0"], "longest item"),
    (["--beam", "3", "-t", "0.5"], "--temperature"),
    (["--beam", "3", "--top-k", "2", "--min-p", "0.1"], "--top-k, --min-p"),
    (["--beam", "2", "--items", "3"], "at most 2 items"), (["--beam", "3", "--length", "0"], "needs an end"),
    (["--beam", "3", "-n", "2"], "--num-samples"),
    (["--beam", "3", "--items", "2", "--max-attempts", "9"], "--max-attempts"),
    (["--length", "0", "-n", "2"], "--num-samples"), (["--length", "0", "--no-stream"], "--no-stream"),
    (["--items", "0"], "--items"), (["--beam", "0"], "--beam"),
])
def test_options_that_do_not_go_together_are_one_line(trained_run, args, message):
    assert message in one_line_error(run("sample", trained_run, *args))


@pytest.mark.parametrize("settings, message", [
    (dict(beam=3, temperature=0.5), "takes no temperature"), (dict(beam=3, max_attempts=5), "max_attempts"),
    (dict(stop="x"), "stop"), (dict(length=0), "longest item"), (dict(max_attempts=0), "max attempts"),
    (dict(beam=2), "at most 2 items"), (dict(streams=0), "streams"),
])
def test_items_settings_that_make_no_sense_are_refused(trained_run, settings, message):
    with pytest.raises(BadValue, match=message):
        Sampler.load(trained_run).items(3, **settings)


def test_greedy_items_are_the_lines_of_the_greedy_text(list_run):
    s = Sampler.load(list_run, weights="fp32")
    lines = [line for line in s.sample(prime="\n", length=300, temperature=0).split("\n")[1:-1] if line][:4]
    assert len(lines) == 4 and [i.text for i in s.items(4, temperature=0)] == lines


def test_a_model_that_never_ends_a_line_makes_no_item_and_gives_up():
    s = tiny_sampler("lstm")
    with torch.no_grad():
        s.model.head.bias[s.tok.chars.index("\n")] = -1e4  # never a newline
    for temperature in (0, 1):
        assert s.items(2, temperature=temperature, length=10, max_attempts=30, seed=0) == []


def test_items_need_a_corpus_or_a_run(trained_run):
    s = Sampler.load(trained_run)
    bare = Sampler(s.model, s.tok)
    with pytest.raises(CharrnnError, match="not loaded from a run"):
        bare.items(3, new=True)
    assert len(bare.items(3, seed=0)) == 3  # unlabelled items need no corpus

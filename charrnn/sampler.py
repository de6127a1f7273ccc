"""Sampling text from a trained model: temperature, top-k, top-p, min-p, priming, stop strings, streaming
(endless too); items (whole lines, labelled by the corpus's splits, new ones only); beam search.

    from charrnn import Sampler
    s = Sampler.load("checkpoints/tinyshakespeare-lstm")
    print(s.sample(prime="ROMEO:", length=300, temperature=0.8, seed=1))
    for piece in s.stream(prime="ROMEO:", length=300):
        print(piece, end="", flush=True)
    names = s.items(100, new=True, label=True, temperature=0.8)   # [Item(text, logprob, ...), ...]
    best = s.beam(k=4, prime="ROMEO:", length=60)                  # the 4 most likely continuations

The prime is read in one pass (`model.prefill`: the fused forward pass of an RNN, or a Transformer
filling its key/value cache); each new character then goes through the model's per-step path
(`model.step`), which is fast one character at a time. Several samples are made
as one batch. Byte-fallback tokens exist only to read unseen input characters: they are never
sampled, so the output is always whole characters.

Items are the complete lines of many streams sampled as one batch. A stream goes on after each newline
with its state carried, as the model read its corpus in training (line after line, its state carried
across them, or a window spanning them), rather than restarting from a fresh state, which it met only
at the start of each training stream; it also keeps every family alike (a Transformer's cache has one
length for its whole batch, so one stream could not restart alone). An item's log-probability is then
the model's given the lines its stream made before it. Whether an item is in the corpus is a set
lookup (corpus_lines.py), built once from the run's id cache.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from pathlib import Path

import torch

from . import memory, quant
from .beam import DROP, LIVE, beam_search
from .checkpoint import Saved, load_run, run_cache
from .corpora import file_sha256, resolve_corpus
from .corpus_lines import CorpusLines, item_text
from .data import cached_ids, encode_corpus, split, training_unknown
from .errors import BadType, BadValue, CharrnnError, one_line
from .families import Family, family_of
from .fileio import open_regular, shown
from .model_folder import is_hf_folder, read_folder
from .models import finite_weights
from .onnx_step import OnnxEngine
from .tokenizer import CharTokenizer, check_unknown
from .units import MAX_SEED

MAX_PRIME_BYTES = 1 << 28  # 256 MiB: a prime file (or standard input) beyond it is refused, not read on
MAX_ITEM_STREAMS = 256  # the most streams an items search samples as one batch


ENGINES = ("torch", "onnxruntime")  # what runs the model's step


@dataclass
class SampleConfig:
    length: int | None = 500  # characters to generate after the prime; None: no end (streaming only)
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    prime: str = ""  # None: no prime
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)  # end at the first of these (not included); None: none
    unknown: str = "error"  # prime characters outside the vocabulary: 'error' or 'bytes'
    min_p: float | None = None  # keep the characters at least this times as likely as the likeliest

    def __post_init__(self) -> None:
        self.prime = "" if self.prime is None else self.prime
        self.stop = _stops(self.stop)

    def validate(self) -> None:
        """One line for a setting that makes no sense: `BadType` (a TypeError) for one of the wrong type,
        `BadValue` (a ValueError) for one out of range; both are CharrnnErrors, as the CLI prints them."""
        if not isinstance(self.prime, str):
            raise BadType(f"prime must be text (a str), not {type(self.prime).__name__}")
        if self.length is not None:
            _check_number("length", self.length, whole=True)
            if self.length < 0:
                raise BadValue(f"length must be >= 0, not {self.length}")
        _check_number("temperature", self.temperature)
        if not 0 <= self.temperature < math.inf:
            raise BadValue(f"temperature must be a finite number >= 0, not {self.temperature}")
        if self.top_k is not None:
            _check_number("top-k", self.top_k, whole=True)
            if self.top_k < 1:
                raise BadValue(f"top-k must be >= 1, not {self.top_k}")
        if self.top_p is not None:
            _check_number("top-p", self.top_p)
            if not 0 < self.top_p <= 1:
                raise BadValue(f"top-p must be in (0, 1], not {self.top_p}")
        if self.min_p is not None:
            _check_number("min-p", self.min_p)
            if not 0 <= self.min_p <= 1:
                raise BadValue(f"min-p must be in [0, 1], not {self.min_p}")
        if self.seed is not None:
            _check_number("seed", self.seed, whole=True)
            if not 0 <= self.seed <= MAX_SEED:
                raise BadValue(f"seed must be in [0, 2**63 - 1], not {self.seed}")
        check_unknown(self.unknown)
        if not all(isinstance(s, str) for s in self.stop):
            raise BadType("stop must be a string or a list of strings")
        if any(s == "" for s in self.stop):
            raise BadValue("a stop string cannot be empty")


def _check_number(name: str, value: object, whole: bool = False) -> None:
    """A number of the kind a setting takes; a bool is not one (True would pass for 1)."""
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadType(f"{name} must be a {'whole number' if whole else 'number'}, not {one_line(repr(value), 40)}")


def _stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """One stop string or several: a plain string is one stop, not one per character; None is none."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    try:
        return tuple(stop)
    except TypeError:
        raise BadType(f"stop must be a string or a list of strings, not {type(stop).__name__}") from None


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                  min_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with temperature applied and the excluded tokens at -inf.

    The largest logit is subtracted first, so a tiny temperature sends the others to -inf (greedy)
    instead of overflowing to inf - inf = NaN. The filters apply to the tempered distribution, in turn:
    top-k, top-p (among what top-k kept), min-p. Min-p keeps a token whose probability is at least
    min_p times the likeliest one's, which every filter keeps, so it composes with the others as the
    intersection of what each keeps."""
    if temperature != 1.0:
        logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p is not None and min_p > 0:
        # p_i >= min_p * p_max  <=>  logit_i >= max logit + ln(min_p): no softmax needed
        floor = logits.amax(-1, keepdim=True) + math.log(min_p)
        logits = logits.masked_fill(logits < floor, float("-inf"))
    return logits


def new_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """The generator a sample draws from: seeded, or from the OS's randomness when `seed` is None."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
    return gen


def exp_noise(gen: torch.Generator, n: int, n_chars: int, device: torch.device) -> torch.Tensor:
    """(n, n_chars) draws of Exp(1): one step's randomness for n streams (see `choose`)."""
    return torch.empty(n, n_chars, device=device).exponential_(generator=gen)


def choose(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
           noise: torch.Tensor | None, min_p: float | None = None) -> torch.Tensor:
    """(B, V) float logits -> (B,) next ids: the largest at temperature 0, else a draw that uses `noise`
    ((B, V) from `exp_noise`; None when greedy).

    What torch.multinomial(probs, 1) computes (the same draws from the same generator), without its input
    checks, which cost more than the draw: argmax of p_i / E_i with E_i ~ Exp(1) picks i with probability p_i."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits, temperature, top_k, top_p, min_p).softmax(-1)
    return probs.div_(noise).argmax(-1)


def start_ids(tok: CharTokenizer) -> list[int]:
    """What a sample without a prime reads first: a line break (or the first token if the corpus had none)."""
    return [int(tok.encode("\n")[0]) if "\n" in tok.chars else 0]


@dataclass(frozen=True)
class Item:
    """A generated text and how likely the model found it: an item (a line, without its newline) from
    `Sampler.items`, or a continuation from `Sampler.beam`."""

    text: str
    # The model's own log-probability (temperature 1, no filter), in nats, of the characters generated:
    # an item's with the newline that ends it, a continuation's with its stop string. Its total, and its
    # mean per character (to compare texts of different lengths).
    logprob: float
    logprob_per_char: float
    label: str | None = None  # "train", "validation" or "new" (corpus_lines.py); None: not asked

    def to_dict(self) -> dict:
        return asdict(self)


def read_prime_file(path: str | Path) -> str:
    """A prime from a file, or from standard input for "-": UTF-8 (a leading BOM dropped, as a corpus's),
    at most MAX_PRIME_BYTES; a FIFO or device path is refused (stdin is how to pipe one in)."""
    if str(path) == "-":
        if sys.stdin is None:
            raise CharrnnError("--prime-file -: there is no standard input to read")
        where, data = "standard input", sys.stdin.buffer.read(MAX_PRIME_BYTES + 1)
    else:
        with open_regular(path, "prime file") as f:
            where, data = shown(path), f.read(MAX_PRIME_BYTES + 1)
    if len(data) > MAX_PRIME_BYTES:
        raise CharrnnError(f"{where} holds more than {MAX_PRIME_BYTES >> 20} MiB: too long for a prime")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{where} is not UTF-8 text ({e.reason} near byte {e.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def run_corpus_lines(saved: Saved, path: Path, tok: CharTokenizer) -> CorpusLines:
    """The lines of the corpus a run was trained on, split as it was (its checkpoint `saved`, read from
    `path`): from the ids the run cached for that corpus (so the file itself may have moved), else from
    the file, if it is still there and unchanged (its sha256 is the one the run recorded)."""
    run, unknown = saved.run, training_unknown(tok)
    cache = run_cache(path.parent)
    ids = cached_ids(cache, run.corpus_sha256, tok, unknown) if cache is not None else None
    if ids is None:
        why = f"items are compared with the corpus the run was trained on, {shown(run.corpus)}"
        try:
            corpus = resolve_corpus(run.corpus, quiet=True)
        except CharrnnError as e:
            raise CharrnnError(f"{why}, and it cannot be read ({e})") from None
        sha = file_sha256(corpus)
        if sha != run.corpus_sha256:
            raise CharrnnError(f"{why}, and it has changed since (its sha256 differs)")
        ids = encode_corpus(corpus, tok, cache, unknown, sha256=sha)
    return CorpusLines.from_ids(ids, tok.chars, len(split(ids, run.val_frac)[0]))


def default_streams(n: int, temperature: float = 1.0) -> int:
    """Streams an items search samples as one batch: twice the items (some lines are no items), 8 to
    MAX_ITEM_STREAMS; one when greedy (greedy streams from one prime would all make the same lines)."""
    return 1 if temperature == 0 else min(MAX_ITEM_STREAMS, max(8, 2 * n))


def default_attempts(n: int) -> int:
    """Lines an items search draws at most, by default, to find n: 20 per item, at least 1,000."""
    return max(1000, 20 * n)


def resolve_step_weights(weights: str, model, device: torch.device) -> str:
    """'auto' -> 'int8' for a model whose family's step takes int8 weights, on a CPU with fbgemm; else 'fp32'."""
    config = getattr(model, "config", None)  # (a stand-in model without one steps in fp32)
    supported = family_of(config.model).step_weights if config is not None else ("fp32",)
    takes_weights = "int8" in supported
    int8_ok = takes_weights and device.type == "cpu" and quant.int8_supported()
    if weights == "auto":
        return "int8" if int8_ok else "fp32"
    if weights not in quant.STEP_WEIGHTS or (weights != "fp32" and not takes_weights):
        raise CharrnnError(f"this model cannot sample with {weights} weights; use fp32")
    if weights == "int8" and not int8_ok:
        raise CharrnnError("int8 weights need a CPU with fbgemm (x86); use fp32")
    return weights


class StopWatch:
    """Holds back text that could still turn into a stop string; says when one has appeared."""

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.text = ""  # generated text not yet released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add a piece; return what can be released now."""
        if self.stopped:
            return ""
        self.text += piece
        if not self.stops:
            out, self.text = self.text, ""
            return out
        hits = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.text = self.text[: min(hits)], ""
            return out
        keep = 0  # longest tail of `text` that is a proper prefix of some stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out, self.text = self.text[: len(self.text) - keep], self.text[len(self.text) - keep :]
        return out

    def flush(self) -> str:
        out, self.text = ("" if self.stopped else self.text), ""
        return out


class Sampler:
    """`weights` is how an RNN's step path holds its weights: "fp32" is exact (the fused forward's numbers);
    "int8" (CPU, fbgemm) is faster for one stream and moves the loss slightly (both measured in
    benchmarks/README.md); "auto" picks int8 where it can run, else fp32. `corpus`: the lines items are
    compared with (`Sampler.load` finds the run's own when first asked)."""

    def __init__(self, model, tokenizer: CharTokenizer, device: torch.device | str = "cpu", weights: str = "auto",
                 engine: str = "torch", corpus: CorpusLines | None = None):
        if not finite_weights(model):
            raise CharrnnError("this model's weights hold NaN or infinite values: it cannot sample")
        if engine not in ENGINES:
            raise CharrnnError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.model = model.to(device).eval()
        self.tok = tokenizer
        self.device = torch.device(device)
        self.weights = resolve_step_weights(weights, model, self.device)
        # the model's prefill and step with these weights (`charrnn serve`'s worker steps through them too)
        if engine == "onnxruntime":  # the step exported and run by ONNX Runtime (CPU), the same loop around it
            if self.device.type != "cpu":
                raise CharrnnError("the onnxruntime engine runs on the CPU: use --device cpu")
            runtime = OnnxEngine(self.model, tokenizer, self.weights)
            self.prefill, self.step = runtime.prefill, runtime.step
        elif self.weights == "fp32":  # a family with fp32 steps only takes no `weights` argument
            self.prefill, self.step = model.prefill, model.step
        else:
            self.prefill = functools.partial(model.prefill, weights=self.weights)
            self.step = functools.partial(model.step, weights=self.weights)
        config = getattr(model, "config", None)  # (a stand-in model without one: the contract's defaults)
        self._family = family_of(config.model) if config is not None else None
        self._reorder = functools.partial((self._family or Family()).reorder_state, model)
        self._corpus = corpus
        self._run: tuple[Saved, Path] | None = None  # where `corpus_lines` finds the corpus

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", weights: str = "auto", engine: str = "torch") -> Sampler:
        """From a run folder (best.pt, else last.pt), a checkpoint file, or a model folder that
        `charrnn export --format hf` wrote (which holds no corpus to compare items with)."""
        if is_hf_folder(run):
            model, tok, _ = read_folder(run)
            return cls(model, tok, device, weights, engine)
        model, tok, saved, path = load_run(run)
        sampler = cls(model, tok, device, weights, engine)
        sampler._run = (saved, path)
        return sampler

    def corpus_lines(self) -> CorpusLines:
        """The lines items are compared with: the run's corpus, read once (`run_corpus_lines`)."""
        if self._corpus is None:
            if self._run is None:
                raise CharrnnError("this sampler was not loaded from a run, so it knows no corpus to compare items "
                                   "with: give it one (Sampler(..., corpus=CorpusLines.from_text(text, n_train)))")
            self._corpus = run_corpus_lines(*self._run, self.tok)
        return self._corpus

    def sample(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (),
               unknown: str = "error", min_p: float | None = None) -> str:
        """The prime followed by up to `length` generated characters."""
        cfg = SampleConfig(length, temperature, top_k, top_p, prime, seed, stop, unknown, min_p)
        return self.sample_many(cfg, 1)[0]

    def stream(self, prime: str = "", length: int | None = 500, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (),
               unknown: str = "error", min_p: float | None = None) -> Iterator[str]:
        """Yield the prime, then the generated text piece by piece as it is made; `length=None`: without
        end (until a stop string, or the caller stops asking), in constant memory."""
        cfg = SampleConfig(length, temperature, top_k, top_p, prime, seed, stop, unknown, min_p)
        watch = StopWatch(cfg.stop)
        gen = self._generate(cfg, 1, keep=False)  # validates cfg and encodes the prime before yielding anything
        yield cfg.prime
        for ids in gen:
            piece = watch.feed(self.tok.id_to_char(ids[0]))
            if piece:
                yield piece
            if watch.stopped:
                return
        if rest := watch.flush():
            yield rest

    def sample_many(self, cfg: SampleConfig, n: int) -> list[str]:
        """n samples generated as one batch; each is the prime followed by its own text."""
        if cfg.length is None:
            raise BadValue("length=None (no end) can only be streamed: use Sampler.stream")
        gen = self._generate(cfg, n, keep=True)  # checks everything before anything is allocated
        watches = [StopWatch(cfg.stop) for _ in range(n)]
        outs = [[] for _ in range(n)]
        for ids in gen:
            for i, t in enumerate(ids):
                outs[i].append(watches[i].feed(self.tok.id_to_char(t)))
            if all(w.stopped for w in watches):
                break
        return [cfg.prime + "".join(o) + w.flush() for o, w in zip(outs, watches)]

    def beam(self, k: int = 4, prime: str = "", length: int = 500, stop: Sequence[str] = (),
             unknown: str = "error") -> list[Item]:
        """The k most likely continuations of `prime` (beam.py), best first, each the prime followed by up
        to `length` characters, ended by a stop string (not included) or the length. Deterministic; it
        draws nothing, so it takes no temperature or filter."""
        cfg = SampleConfig(length=length, prime=prime, stop=stop, unknown=unknown)
        prime_ids = self._check_beam(cfg, k)
        stops = cfg.stop

        def judge(text: str):
            ends = [len(s) for s in stops if text.endswith(s)]  # (none ended before this character)
            if ends:
                return text[: len(text) - max(ends)]  # the longest one started first
            return text if len(text) >= length else LIVE

        ended = self._beam(prime_ids, k, judge, length)
        return [Item(cfg.prime + e.text, e.logprob, e.per_char) for e in ended]

    def items(self, n: int, *, new: bool = False, label: bool = False, max_attempts: int | None = None,
              beam: int | None = None, streams: int | None = None, **settings) -> list[Item]:
        """n items: complete lines the model makes, each without its newline (see `iter_items`). Fewer
        when the attempts (or, with `beam`, the beam's items) ran out first."""
        return list(self.iter_items(n, new=new, label=label, max_attempts=max_attempts, beam=beam, streams=streams,
                                    **settings))

    def iter_items(self, n: int, *, new: bool = False, label: bool = False, max_attempts: int | None = None,
                   beam: int | None = None, streams: int | None = None, **settings) -> Iterator[Item]:
        """Yield items as they are found, up to n. An item is a line that starts after a newline and
        ends at the next; one longer than `length` characters is cut and is no item, nor is an empty
        line. `settings` are SampleConfig's but `stop` (an item ends at its newline): `length` is the
        longest item, the prime context read first (a newline is added where it ends mid-line: items
        start on a line of their own). `new`: only items in neither split of the run's corpus, each
        once. `label`: each says "train", "validation" or "new". Sampling draws from `streams` batched
        streams (default up to MAX_ITEM_STREAMS) and gives up after `max_attempts` lines drawn (cut,
        empty, repeated and known ones included; default `default_attempts(n)`). `beam=K`: the n most
        likely items that a beam search of width K >= n finds (each within `length`); it draws nothing, so
        it takes no temperature, filter or max_attempts."""
        cfg = SampleConfig(**settings)
        cfg.validate()
        _check_number("number of items", n, whole=True)
        if n < 1:
            raise BadValue(f"number of items must be >= 1, not {n}")
        if cfg.stop:
            raise BadValue("an item ends at its newline: stop strings do not apply to items")
        if cfg.length is None or cfg.length < 1:
            raise BadValue(f"length (the longest item) must be >= 1 for items, not {cfg.length}")
        if "\n" not in self.tok.chars:
            raise CharrnnError("this model's vocabulary has no newline, so it makes no lines: no items")
        if cfg.prime and not cfg.prime.endswith("\n"):
            cfg.prime += "\n"
        if beam is not None:
            drawn = [name for name, given in (("temperature", cfg.temperature != 1.0), ("top_k", cfg.top_k is not None),
                                              ("top_p", cfg.top_p is not None), ("min_p", cfg.min_p is not None),
                                              ("max_attempts", max_attempts is not None)) if given]
            if drawn:
                raise BadValue(f"a beam search draws nothing: it takes no {', '.join(drawn)}")
        lines = self.corpus_lines() if new or label else None
        if beam is not None:
            return self._beam_items(n, beam, cfg, new, label, lines)
        if max_attempts is None:
            max_attempts = default_attempts(n)
        _check_number("max attempts", max_attempts, whole=True)
        if max_attempts < 1:
            raise BadValue(f"max attempts must be >= 1, not {max_attempts}")
        if streams is None:
            streams = default_streams(n, cfg.temperature)
        _check_number("streams", streams, whole=True)
        if streams < 1:
            raise BadValue(f"streams must be >= 1, not {streams}")
        gen = self._generate(replace(cfg, length=None), streams, keep=False, scores=True)
        return self._sampled_items(gen, n, cfg.length, max_attempts, new, label, lines)

    def _sampled_items(self, gen, n: int, longest: int, max_attempts: int, new: bool, label: bool,
                       lines: CorpusLines | None) -> Iterator[Item]:
        """The lines of the streams `gen` yields, judged in the order (line number, stream): every stream's
        first line, then every stream's second, and so on, each once the lines before it in that order
        are judged. Not in the order they end, which would favour short lines (they end first) and make
        the first n items shorter than the model's lines are."""
        newline, chars = self.tok.chars.index("\n"), self.tok.chars
        lines_so_far: list[list[str] | None] = []  # each stream's unfinished line; None: cut, skipping to its end
        sums: list[float] = []  # its log-probability so far
        skipped: list[int] = []  # characters skipped since a cut
        done: list[deque] = []  # each stream's finished lines not yet judged: (text, logprob, chars), or None if cut
        seen: set[str] = set()
        found = attempts = turn = 0  # turn: the stream whose next finished line is judged next
        for ids, logps in gen:
            if not done:
                lines_so_far, sums, skipped = [[] for _ in ids], [0.0] * len(ids), [0] * len(ids)
                done = [deque() for _ in ids]
            for i, (t, lp) in enumerate(zip(ids, logps)):
                line = lines_so_far[i]
                if line is None:  # skipping the rest of a cut line: each `longest` more characters, one more attempt
                    skipped[i] += 1
                    if t == newline:
                        lines_so_far[i] = []
                    elif skipped[i] > longest:
                        done[i].append(None)
                        skipped[i] = 0
                elif t == newline:
                    done[i].append((item_text("".join(line)), sums[i] + lp, len(line) + 1))
                    lines_so_far[i], sums[i] = [], 0.0
                elif len(line) < longest:
                    line.append(chars[t])
                    sums[i] += lp
                else:  # a line longer than `longest`: no item
                    done[i].append(None)
                    lines_so_far[i], sums[i], skipped[i] = None, 0.0, 0
            while done[turn]:
                line = done[turn].popleft()
                turn = (turn + 1) % len(done)
                attempts += 1
                if line is not None and line[0] and not (new and (line[0] in seen or line[0] in lines)):
                    text, total, count = line
                    seen.add(text)
                    found += 1
                    yield Item(text, total, total / count, lines.label(text) if label else None)
                    if found == n:
                        return
                if attempts >= max_attempts:
                    return

    def _beam_items(self, n: int, k: int, cfg: SampleConfig, new: bool, label: bool,
                    lines: CorpusLines | None) -> Iterator[Item]:
        prime_ids = self._check_beam(cfg, k)
        if k < n:
            raise BadValue(f"a beam of width {k} finds at most {k} items, not {n}: widen it to at least {n}")
        longest = cfg.length

        def judge(text: str):
            if text.endswith("\n"):
                item = item_text(text[:-1])
                return DROP if not item or (new and item in lines) else item
            return DROP if len(text) > longest else LIVE

        ended = self._beam(prime_ids, k, judge, longest + 1)[:n]
        return iter([Item(e.text, e.logprob, e.per_char, lines.label(e.text) if label else None) for e in ended])

    def _check_beam(self, cfg: SampleConfig, k: int) -> list[int] | None:
        """The prime's ids, once the settings of a beam search of width k are known to make sense."""
        cfg.validate()
        _check_number("beam width", k, whole=True)
        if k < 1:
            raise BadValue(f"beam width must be >= 1, not {k}")
        if cfg.length is None or cfg.length < 1:
            raise BadValue(f"a beam search needs a length >= 1, not {cfg.length}")
        prime_ids = self.tok.encode(cfg.prime, unknown=cfg.unknown) if cfg.prime else None
        self._check_memory(k, prime_ids, 0, f"a beam of {k:,}", "lower --beam")
        return prime_ids

    @torch.inference_mode()
    def _beam(self, prime_ids, k: int, judge, max_steps: int):
        logits, state = self._start(prime_ids, 1)
        return beam_search(logits, state, self.step, self._reorder, k, self.tok.chars, judge, max_steps)

    def _check_memory(self, n: int, prime_ids, kept: int, what: str, hint: str) -> None:
        config = getattr(self.model, "config", None)  # (a stand-in model without one is not sized)
        if config is not None:
            need = memory.sampling_need(config, n, len(prime_ids) if prime_ids is not None else 1, kept)
            memory.check(need, self.device, what, hint)

    def _generate(self, cfg: SampleConfig, n: int, keep: bool, scores: bool = False) -> Iterator:
        """Yield, for each new position, the n sampled ids (one per stream); with `scores`, also their
        log-probabilities under the model's own distribution. `keep`: the caller holds every character
        until the end (counted in the memory the batch needs)."""
        cfg.validate()
        _check_number("number of samples", n, whole=True)
        if n < 1:
            raise BadValue(f"number of samples must be >= 1, not {n}")
        prime_ids = self.tok.encode(cfg.prime, unknown=cfg.unknown) if cfg.prime else None
        what = f"{n:,} sample(s) of {cfg.length:,} characters" if cfg.length is not None else f"{n:,} stream(s)"
        self._check_memory(n, prime_ids, n * cfg.length if keep else 0, what,
                           "lower --num-samples or --length" + ("" if n > 1 else ", or stream them (--stream)"))
        return self._loop(cfg, n, prime_ids, scores)

    def read_prime(self, prime: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(B, T) ids -> the logits after the last one and the state: the family's way (an RNN's fused pass,
        a chunk at a time; a Transformer's key/value cache). `charrnn serve` reads its prompts with it too."""
        if self._family is None:  # (a stand-in model without a config: its prefill)
            return self.prefill(prime)
        return self._family.read_prime(self.model, prime, self.prefill, self.step)

    def _start(self, prime_ids, n: int) -> tuple[torch.Tensor, Any]:
        """The logits after the prime (none: `start_ids`), for n streams, and the state they step on."""
        prime = torch.as_tensor(start_ids(self.tok) if prime_ids is None else prime_ids, dtype=torch.long,
                                device=self.device)
        return self.read_prime(prime.unsqueeze(0).expand(n, -1))

    # A decorated generator: inference mode holds while it runs, not while it waits between two characters
    # (a `with` block around the yields would leave the caller in inference mode as long as a stream is open).
    @torch.inference_mode()
    def _loop(self, cfg: SampleConfig, n: int, prime_ids, scores: bool = False) -> Iterator:
        gen = new_generator(cfg.seed, self.device)
        logits, state = self._start(prime_ids, n)
        n_chars = self.tok.n_chars
        for i in range(cfg.length) if cfg.length is not None else itertools.count():
            if i:
                logits, state = self.step(nxt, state)
            logits = logits[:, :n_chars].float()  # byte tokens are never sampled
            noise = exp_noise(gen, n, n_chars, self.device) if cfg.temperature else None
            nxt = choose(logits, cfg.temperature, cfg.top_k, cfg.top_p, noise, cfg.min_p)
            if scores:
                yield nxt.tolist(), torch.log_softmax(logits, -1).gather(1, nxt[:, None])[:, 0].tolist()
            else:
                yield nxt.tolist()

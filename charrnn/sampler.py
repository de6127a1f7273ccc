"""Sampling text from a trained model: temperature, top-k, top-p, priming, stop strings, streaming.

    from charrnn import Sampler
    s = Sampler.load("checkpoints/tinyshakespeare-lstm")
    print(s.sample(prime="ROMEO:", length=300, temperature=0.8, seed=1))
    for piece in s.stream(prime="ROMEO:", length=300):
        print(piece, end="", flush=True)

The prime is read in one pass (`model.prefill`: the fused forward pass of an RNN, or a Transformer
filling its key/value cache); each new character then goes through the model's per-step path
(`model.step`), which is fast one character at a time. Several samples are made
as one batch. Byte-fallback tokens exist only to read unseen input characters: they are never
sampled, so the output is always whole characters.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import torch

from . import memory, quant
from .checkpoint import load_run
from .errors import BadType, BadValue, CharrnnError, one_line
from .families import family_of
from .model_folder import is_hf_folder, read_folder
from .models import finite_weights
from .onnx_step import OnnxEngine
from .tokenizer import CharTokenizer, check_unknown
from .units import MAX_SEED


ENGINES = ("torch", "onnxruntime")  # what runs the model's step


@dataclass
class SampleConfig:
    length: int = 500  # characters to generate after the prime
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    prime: str = ""  # None: no prime
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)  # end at the first of these (not included); None: none
    unknown: str = "error"  # prime characters outside the vocabulary: 'error' or 'bytes'

    def __post_init__(self) -> None:
        self.prime = "" if self.prime is None else self.prime
        self.stop = _stops(self.stop)

    def validate(self) -> None:
        """One line for a setting that makes no sense: `BadType` (a TypeError) for one of the wrong type,
        `BadValue` (a ValueError) for one out of range; both are CharrnnErrors, as the CLI prints them."""
        if not isinstance(self.prime, str):
            raise BadType(f"prime must be text (a str), not {type(self.prime).__name__}")
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


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits with temperature applied and the excluded tokens at -inf.

    The largest logit is subtracted first, so a tiny temperature sends the others to -inf (greedy)
    instead of overflowing to inf - inf = NaN."""
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
           noise: torch.Tensor | None) -> torch.Tensor:
    """(B, V) float logits -> (B,) next ids: the largest at temperature 0, else a draw that uses `noise`
    ((B, V) from `exp_noise`; None when greedy).

    What torch.multinomial(probs, 1) computes (the same draws from the same generator), without its input
    checks, which cost more than the draw: argmax of p_i / E_i with E_i ~ Exp(1) picks i with probability p_i."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)
    return probs.div_(noise).argmax(-1)


def start_ids(tok: CharTokenizer) -> list[int]:
    """What a sample without a prime reads first: a line break (or the first token if the corpus had none)."""
    return [int(tok.encode("\n")[0]) if "\n" in tok.chars else 0]


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
    benchmarks/README.md); "auto" picks int8 where it can run, else fp32."""

    def __init__(self, model, tokenizer: CharTokenizer, device: torch.device | str = "cpu", weights: str = "auto",
                 engine: str = "torch"):
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

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", weights: str = "auto", engine: str = "torch") -> Sampler:
        """From a run folder (best.pt, else last.pt), a checkpoint file, or a model folder that
        `charrnn export --format hf` wrote."""
        if is_hf_folder(run):
            model, tok, _ = read_folder(run)
        else:
            model, tok, _, _ = load_run(run)
        return cls(model, tok, device, weights, engine)

    def sample(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (),
               unknown: str = "error") -> str:
        """The prime followed by up to `length` generated characters."""
        cfg = SampleConfig(length, temperature, top_k, top_p, prime, seed, _stops(stop), unknown)
        return self.sample_many(cfg, 1)[0]

    def stream(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (),
               unknown: str = "error") -> Iterator[str]:
        """Yield the prime, then the generated text piece by piece as it is made."""
        cfg = SampleConfig(length, temperature, top_k, top_p, prime, seed, _stops(stop), unknown)
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
        gen = self._generate(cfg, n, keep=True)  # checks everything before anything is allocated
        watches = [StopWatch(cfg.stop) for _ in range(n)]
        outs = [[] for _ in range(n)]
        for ids in gen:
            for i, t in enumerate(ids):
                outs[i].append(watches[i].feed(self.tok.id_to_char(t)))
            if all(w.stopped for w in watches):
                break
        return [cfg.prime + "".join(o) + w.flush() for o, w in zip(outs, watches)]

    @torch.inference_mode()
    def _generate(self, cfg: SampleConfig, n: int, keep: bool) -> Iterator[list[int]]:
        """Yield, for each new position, the n sampled ids (one per stream). `keep`: the caller holds
        every character until the end (counted in the memory the batch needs)."""
        cfg.validate()
        _check_number("number of samples", n, whole=True)
        if n < 1:
            raise BadValue(f"number of samples must be >= 1, not {n}")
        prime_ids = self.tok.encode(cfg.prime, unknown=cfg.unknown) if cfg.prime else None
        config = getattr(self.model, "config", None)  # (a stand-in model without one is not sized)
        if config is not None:
            need = memory.sampling_need(config, n, len(prime_ids) if prime_ids is not None else 1,
                                        n * cfg.length if keep else 0)
            memory.check(need, self.device, f"{n:,} sample(s) of {cfg.length:,} characters",
                         "lower --num-samples or --length" + ("" if n > 1 else ", or stream them (--stream)"))
        return self._loop(cfg, n, prime_ids)

    def read_prime(self, prime: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(B, T) ids -> the logits after the last one and the state: the family's way (an RNN's fused pass,
        a chunk at a time; a Transformer's key/value cache). `charrnn serve` reads its prompts with it too."""
        config = getattr(self.model, "config", None)  # (a stand-in model without one: its prefill)
        if config is None:
            return self.prefill(prime)
        return family_of(config.model).read_prime(self.model, prime, self.prefill, self.step)

    def _loop(self, cfg: SampleConfig, n: int, prime_ids) -> Iterator[list[int]]:
        with torch.inference_mode():
            gen = new_generator(cfg.seed, self.device)
            prime = torch.as_tensor(start_ids(self.tok) if prime_ids is None else prime_ids, dtype=torch.long,
                                    device=self.device)
            prime = prime.unsqueeze(0).expand(n, -1)
            logits, state = self.read_prime(prime)
            n_chars = self.tok.n_chars
            for i in range(cfg.length):
                if i:
                    logits, state = self.step(nxt, state)
                logits = logits[:, :n_chars].float()  # byte tokens are never sampled
                noise = exp_noise(gen, n, n_chars, self.device) if cfg.temperature else None
                nxt = choose(logits, cfg.temperature, cfg.top_k, cfg.top_p, noise)
                yield nxt.tolist()

"""OpenAI's completions API as `charrnn serve` speaks it: a request body checked into a `Completion`, the
response, stream chunks and errors as OpenAI writes them. No HTTP here (serve.py), so all of it is tested
without a server.

A token is a character: `max_tokens` counts characters, and so does `usage`. Fields: prompt (a string, or a
list holding one), max_tokens, temperature, top_p, n, stop, seed, stream, stream_options.include_usage,
echo, user and model (accepted; the server has one model); charrnn's own: top_k, and unknown ("error":
characters outside the vocabulary are refused naming them; "bytes": read as UTF-8 bytes, where the run has
byte tokens). Fields OpenAI has and charrnn does not (logprobs, logit_bias, suffix, best_of, the penalties)
are accepted at their neutral values only; any other field is refused, as OpenAI refuses it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .batching import Completion
from .errors import CharrnnError
from .tokenizer import CharTokenizer
from .units import MAX_SEED

# The limits (docs/serve.md, "Limits"). A prompt is read in one pass while every other stream waits, so it is
# bounded; so are what one request may hold in the batch (n x max_tokens) and the body.
MAX_BODY = 256 * 1024  # bytes
MAX_PROMPT = 8192  # characters
MAX_TOKENS = 4096  # characters per choice
MAX_N = 16  # choices per request
MAX_STOPS, MAX_STOP_CHARS = 4, 64  # stop strings, characters in each
DEFAULT_MAX_TOKENS = 16  # OpenAI's

# accepted only at these values: what OpenAI does when they are left out
NEUTRAL = {"logprobs": (None,), "logit_bias": (None, {}), "suffix": (None, ""), "presence_penalty": (None, 0),
           "frequency_penalty": (None, 0)}
FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
          "echo", "user", "best_of", "top_k", "unknown", *NEUTRAL}


class ApiError(Exception):
    """A refused request: its HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Request:
    """A checked request: what the worker makes, and how the answer is shaped."""

    completion: Completion
    prompt: str
    stream: bool = False
    echo: bool = False  # the prompt comes first in each choice's text
    include_usage: bool = False  # a stream ends with a chunk holding `usage`


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object. NaN and Infinity (which Python's json reads) are refused, as are numbers
    too large for a float, and nesting too deep to read."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON: {str(e)[:120] or type(e).__name__}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _integer(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"{name} must be an integer, not {json.dumps(v)[:40]}", name)
    if not lo <= v <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, not {v}", name)
    return v


def _number(body: dict, name: str, default: float | None, lo: float, hi: float, lo_open: bool = False) -> float | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(400, f"{name} must be a number, not {json.dumps(v)[:40]}", name)
    if not (math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi):
        raise ApiError(400, f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], not {v}", name)
    return float(v)


def _flag(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ApiError(400, f"{name} must be true or false", name)
    return v


def _text(v: Any, name: str, limit: int) -> str:
    if not isinstance(v, str):
        raise ApiError(400, f"{name} must be a string", name)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's \ud800 escapes can make one)
        raise ApiError(400, f"{name} is not valid Unicode text", name) from None
    if len(v) > limit:
        raise ApiError(400, f"{name} is {len(v):,} characters; the limit is {limit:,}", name)
    return v


def _prompt(body: dict) -> str:
    v = body.get("prompt")
    if v is None:
        return ""
    if isinstance(v, list):
        if len(v) != 1 or not isinstance(v[0], str):
            raise ApiError(400, "prompt must be a string, or a list of one string: one prompt per request, "
                                "as text (token ids mean nothing here)", "prompt")
        v = v[0]
    return _text(v, "prompt", MAX_PROMPT)


def _stops(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    stops = [_text(s, "stop", MAX_STOP_CHARS) for s in stops]
    if "" in stops:
        raise ApiError(400, "a stop string cannot be empty", "stop")
    return tuple(stops)


def parse_request(raw: bytes, tok: CharTokenizer, max_n: int = MAX_N) -> Request:
    """A request body -> a checked Request, or ApiError (400) naming the first thing wrong."""
    body = read_json(raw)
    for name in body:
        if name not in FIELDS:
            raise ApiError(400, f"Unrecognized request argument supplied: {name[:64]}", name[:64])
    for name, allowed in NEUTRAL.items():
        if body.get(name) not in allowed:  # (json gives no NaN; 0.0 == 0)
            raise ApiError(400, f"{name} is not supported by charrnn", name)
    for name in ("model", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(400, f"{name} must be a string", name)
    n = _integer(body, "n", 1, 1, max_n)
    if body.get("best_of") not in (None, n):  # best_of == n is n choices, all returned
        raise ApiError(400, "best_of is not supported by charrnn (other than equal to n)", "best_of")
    unknown = body.get("unknown", "error")
    if unknown not in ("error", "bytes"):
        raise ApiError(400, 'unknown must be "error" or "bytes"', "unknown")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and set(options) <= {"include_usage"}
                                    and isinstance(options.get("include_usage", False), bool)):
        raise ApiError(400, 'stream_options may hold only "include_usage": true or false', "stream_options")
    prompt = _prompt(body)
    try:
        ids = tuple(int(i) for i in tok.encode(prompt, unknown=unknown)) if prompt else ()
    except CharrnnError as e:
        raise ApiError(400, f"prompt: {e}", "prompt", "unknown_characters") from None
    completion = Completion(
        prompt_ids=ids, n=n, max_tokens=_integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, MAX_TOKENS),
        temperature=_number(body, "temperature", 1.0, 0, math.inf),
        top_k=_integer(body, "top_k", None, 1, 1 << 30),
        top_p=_number(body, "top_p", None, 0, 1, lo_open=True),
        seed=_integer(body, "seed", None, 0, MAX_SEED), stop=_stops(body))
    stream = _flag(body, "stream")
    include_usage = stream and bool((options or {}).get("include_usage"))
    return Request(completion, prompt, stream, _flag(body, "echo"), include_usage)


# --- answers -----------------------------------------------------------------------------------------
def usage(prompt: str, completion_chars: int) -> dict[str, int]:
    return {"prompt_tokens": len(prompt), "completion_tokens": completion_chars,
            "total_tokens": len(prompt) + completion_chars}


def choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def response(cid: str, created: int, model: str, choices: list[dict], use: dict | None) -> dict[str, Any]:
    """A completion, or one chunk of a stream (`use` None until a stream's last chunk)."""
    out = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if use is not None:
        out["usage"] = use
    return out


def model_list(name: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "charrnn"}]}

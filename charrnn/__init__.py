"""charrnn: character-level language models (stacked LSTM/GRU/RNN, and a Transformer baseline) you can train on a laptop CPU.

The names below are imported on first use, so `charrnn --help` and `charrnn corpus list` start
without loading torch."""

from importlib import import_module

from .errors import CharrnnError

_LAZY = {"GPT": "families.transformer.model", "CharRNN": "families.rnn.model", "MinRNN": "families.minrnn.model",
         "ModelConfig": "config",
         "SampleConfig": "sampler", "Sampler": "sampler", "CharTokenizer": "tokenizer", "TrainConfig": "trainer",
         "Trainer": "trainer"}

__all__ = ["CharrnnError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

"""A model's config: the fields every kind of model reads, and the options its family declares.
Nothing here imports torch, so the families can declare themselves (and the CLI list their options)
without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """What a model is: the fields every family reads, and `options`, the ones its family declares
    (`Family.options`; `families.model_config` fills in their defaults). `config.embed` reads an option."""

    COMMON_FIELDS = ("vocab_size", "model", "n_layers", "hidden", "dropout", "n_outputs")

    vocab_size: int
    model: str = "lstm"  # a --model value: the family that builds it (families.kinds())
    n_layers: int = 2  # recurrent layers, or Transformer blocks
    hidden: int = 512  # hidden units per layer, or the Transformer's width
    dropout: float = 0.0
    # Tokens the output layer scores: the corpus's characters, which come first in the vocabulary. The
    # byte tokens after them are read (a prime or an eval text may hold characters the corpus has not)
    # but never predicted, so they cost nothing in training. None: every token, as checkpoints written
    # before this field have it.
    n_outputs: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the family's own settings, by name
    # Options left out of `to_dict` while at these defaults (`Option.omit_default`): a config written before
    # such an option existed reads back as it was written.
    omit_defaults: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_outputs is not None and not 1 <= self.n_outputs <= self.vocab_size:
            raise ValueError(f"n_outputs must be in [1, vocab_size={self.vocab_size}], not {self.n_outputs}")

    def __getattr__(self, name: str) -> Any:  # only for what the dataclass fields are not: the options
        options = self.__dict__.get("options")
        if options is None or name not in options:
            raise AttributeError(f"a {self.__dict__.get('model', '?')} model has no setting {name!r}")
        return options[name]

    @property
    def outputs(self) -> int:
        return self.vocab_size if self.n_outputs is None else self.n_outputs

    def to_dict(self) -> dict:
        """The config as config.json and checkpoints hold it: one flat table (the options beside the
        common fields); n_outputs only when set, as the options in `omit_defaults`."""
        common = {k: getattr(self, k) for k in self.COMMON_FIELDS if k != "n_outputs" or self.n_outputs is not None}
        return {**common, **{k: v for k, v in self.options.items()
                             if not (k in self.omit_defaults and v == self.omit_defaults[k])}}

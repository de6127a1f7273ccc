"""Kinds of model, each behind one contract (`base.Family`), and every lookup by kind.

Built in: `rnn` (lstm, gru, rnn), `minrnn` (mingru, minlstm) and `transformer`, one module each. A
plug-in family is a module that calls `register(MyFamily())` on import. It is loaded from the
`charrnn.families` entry-point group of an installed package, or from the modules named in the
CHARRNN_FAMILIES environment variable (comma-separated), which spawned processes (compare's training
runs) inherit. Plug-ins load at the first lookup, so that importing charrnn runs no one's code.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig
from ..errors import CharrnnError, one_line, printable
from . import minrnn, rnn, transformer  # noqa: F401  (each registers itself, in the order --model lists them)
from .base import Family, Option, PortableStep, Preset, StateSpec, register, registered

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..evaluate import EvalResult

__all__ = ["Family", "Option", "Preset", "register", "kinds", "families", "family_of", "model_config",
           "config_from_dict", "build_model", "evaluate_model", "param_count", "macs_per_char", "model_settings",
           "option_names", "PortableStep", "StateSpec", "portable_step", "exportable_kinds"]

PLUGINS_ENV = "CHARRNN_FAMILIES"
ENTRY_POINTS = "charrnn.families"
_plugins_loaded = False
_failed: CharrnnError | None = None  # a plug-in that could not be loaded: every command says so


def _load_plugins() -> None:
    """The plug-ins (once). One that cannot be imported is one line, for this call and every later one."""
    global _plugins_loaded, _failed
    if _failed is not None:
        raise _failed
    if _plugins_loaded:
        return
    _plugins_loaded = True
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    plugins = [(f"{PLUGINS_ENV} names {name}", lambda name=name: importlib.import_module(name)) for name in names]
    plugins += [(f"the installed plug-in {ep.name} ({ep.value})", ep.load) for ep in entry_points(group=ENTRY_POINTS)]
    for what, load in plugins:
        try:
            load()
        except Exception as e:  # a plug-in's own bug included: not ours to show as a traceback
            _failed = CharrnnError(f"{printable(what)}, which cannot be imported ({type(e).__name__}: "
                                   f"{one_line(e, 120)})")
            raise _failed from None


def kinds() -> tuple[str, ...]:
    """Every --model value, family by family."""
    _load_plugins()
    return tuple(registered())


def families() -> list[Family]:
    """Every family, in the order their kinds are listed."""
    _load_plugins()
    return list({id(f): f for f in registered().values()}.values())


def family_of(kind: str) -> Family:
    """The family that builds `kind` (a --model value); a ValueError naming the kinds there are."""
    _load_plugins()
    try:
        return registered()[kind]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(registered())}, not {kind!r}") from None


def model_config(vocab_size: int, model: str = ModelConfig.model, **settings: Any) -> ModelConfig:
    """A complete ModelConfig: the common fields and the options of `model`'s family, the rest at their
    defaults (`Family.config`)."""
    return family_of(model).config(vocab_size, model=model, **settings)


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from its `to_dict()` (config.json, a checkpoint); a ValueError if it does not make one.
    A config without `model` was written when the classic RNNs were the only kind, as ModelConfig's
    default still is."""
    return model_config(**d)


def build_model(config: ModelConfig) -> torch.nn.Module:
    """The model `config.model` names, built by its family."""
    return family_of(config.model).build(config)


def evaluate_model(model, ids: np.ndarray, device: torch.device, precision: str = "fp32", **kw: Any) -> EvalResult:
    """Mean loss over `ids` by the method of the model's family (`Family.evaluate`: streams or windows).
    `limit`: score about that many characters only (a part of the whole pass; see evaluate.py)."""
    return family_of(model.config.model).evaluate(model, ids, device, precision, **kw)


def param_count(config: ModelConfig) -> int:
    """The parameters `build_model(config)` has, by formula (nothing is built)."""
    return family_of(config.model).param_count(config)


def macs_per_char(config: ModelConfig) -> dict[str, float]:
    """Multiply-adds per character of training and of one sampling step (`Family.macs_per_char`)."""
    return family_of(config.model).macs_per_char(config)


def model_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`settings` split into what makes the model config of their kind (the common fields and its family's
    options) and the rest."""
    kind = settings.get("model", ModelConfig.model)
    keys = set(ModelConfig.COMMON_FIELDS) | {o.name for o in family_of(kind).options}
    return {k: v for k, v in settings.items() if k in keys}, {k: v for k, v in settings.items() if k not in keys}


def option_names() -> set[str]:
    """Every option any family declares."""
    return {o.name for f in families() for o in f.options}


def exportable_kinds() -> list[str]:
    """The kinds whose family gives a portable step (`Family.portable`), so `charrnn export` takes them."""
    return [k for k in kinds() if type(family_of(k)).portable is not Family.portable]


def portable_step(model: torch.nn.Module) -> PortableStep:
    """The model's step in plain tensor operations, by its family; one line naming the kinds that export
    where its family gives none."""
    try:
        return family_of(model.config.model).portable(model)
    except NotImplementedError:
        raise CharrnnError(f"a {model.config.model} model cannot be exported (its family gives no portable step); "
                           f"these can: {', '.join(exportable_kinds())}") from None

"""`charrnn export`: a trained model taken where torch and charrnn are not.

- onnx.py: the one-character step as an ONNX graph (charrnn/onnx_runtime.py samples from it);
- hf.py: a Hugging Face-style folder (safetensors, config.json, tokenizer.json, a model card), which
  `Sampler.load` reads back;
- html.py: one self-contained page that samples in the browser (charrnn/web/);
- run.py: the command itself, from a run folder to the files.

The libraries these need are an optional extra (`pip install 'charrnn-toolkit[export]'`): `optional`
imports one, or says in one line what to install. Nothing here is imported by `import charrnn`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import CharrnnError

FORMATS = ("onnx", "hf", "html")
EXTRA = "pip install 'charrnn-toolkit[export]'"


def optional(module: str) -> ModuleType:
    """Import a library of the `export` extra, or fail in one line saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CharrnnError(f"this needs {module.split('.')[0]}, which is not installed: {EXTRA}") from None

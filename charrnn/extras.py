"""The optional extras' libraries: `pip install 'charrnn-toolkit[export]'` (onnx, onnxruntime,
safetensors) and `[serve]` (uvicorn, starlette, sse-starlette). `optional` imports one, or says in one
line what to install. Only the commands that need one ask for it, so `import charrnn` and every other
command work without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CharrnnError

# library (as imported) -> the extra that brings it (pyproject.toml's optional-dependencies)
EXTRAS = {"onnx": "export", "onnxruntime": "export", "safetensors": "export",
          "uvicorn": "serve", "starlette": "serve", "sse_starlette": "serve"}


def install_hint(library: str) -> str:
    """What to run to get `library`: its extra, from the package index or a checkout."""
    extra = EXTRAS[library]
    return f"pip install 'charrnn-toolkit[{extra}]' (in a checkout: pip install -e '.[{extra}]')"


def optional(module: str) -> ModuleType:
    """Import a library of an optional extra, or fail in one line saying what to install."""
    library = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CharrnnError(f"this needs {library}, which is not installed: {install_hint(library)}") from None

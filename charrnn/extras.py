"""The optional extras' libraries (`pip install 'charrnn-toolkit[export]'`): `optional` imports one, or
says in one line what to install. Only the commands that need one ask for it, so `import charrnn` and
every other command work without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CharrnnError

EXTRAS = {"onnx": "export", "onnxruntime": "export", "safetensors": "export"}  # library -> the extra that has it


def optional(module: str) -> ModuleType:
    """Import a library of an optional extra, or fail in one line saying what to install."""
    library = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CharrnnError(f"this needs {library}, which is not installed: "
                           f"pip install 'charrnn-toolkit[{EXTRAS.get(library, 'export')}]'") from None

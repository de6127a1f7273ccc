"""Every module of charrnn imports, and the places that use POSIX-only facilities work, where those are
missing (Windows has no `resource`, `fcntl` or `os.setpgrp`); each is blocked in a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import os, pkgutil, sys, importlib
sys.modules["resource"] = None  # `import resource` now raises ImportError, as on Windows
sys.modules["fcntl"] = None
del os.setpgrp
import charrnn
for m in pkgutil.walk_packages(charrnn.__path__, "charrnn."):
    if not m.name.endswith("__main__"):  # (that one runs the command)
        importlib.import_module(m.name)
from charrnn.checkpoint import FolderLock
from charrnn.compare import _peak_rss_mib
with FolderLock(sys.argv[1]):  # no flock: one writer per folder is then the user's to keep
    pass
peak = _peak_rss_mib()
assert peak is None or peak > 0, peak
print("ok")
"""


def test_charrnn_imports_and_runs_without_posix_only_modules(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "run")], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr

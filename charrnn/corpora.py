"""Finding a corpus: a path to a text file, or a name from the catalog (`charrnn/catalog.json`, package
data) whose file is read from $CHARRNN_CORPORA, else downloaded once and checked against its sha256.

Only regular files count as corpora: a FIFO or a device would block or never end. Nothing here
imports torch or numpy, so `charrnn corpus list` starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from .errors import CharrnnError
from .fileio import atomic_file, expand_user, open_regular, reason, shown

CORPORA_ENV = "CHARRNN_CORPORA"
CATALOG = Path(__file__).resolve().with_name("catalog.json")  # package data: in the wheel too
# Where a source checkout keeps the corpora it downloads (git-ignored); an installed package has no such
# folder beside it, and downloads into the user's cache instead (`_catalog_path`).
REPO_CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def load_catalog() -> dict[str, dict]:
    """The named corpora in `catalog.json`."""
    return json.loads(CATALOG.read_text(encoding="utf-8"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path, "text file") as f:
        try:
            while block := f.read(1 << 22):
                h.update(block)
        except OSError as e:
            raise CharrnnError(f"cannot read {shown(path)}: {reason(e)}") from None
    return h.hexdigest()


def resolve_corpus(corpus: str, quiet: bool = False) -> Path:
    """A path to a text file, or a catalog name (local copy in $CHARRNN_CORPORA, else downloaded once)."""
    path = expand_user(corpus)
    catalog = load_catalog()
    if path.exists() or corpus not in catalog:
        if not path.exists():
            names = ", ".join(sorted(catalog))
            raise CharrnnError(f"no such file or catalog corpus: {shown(corpus)} (catalog: {names})")
        open_regular(path, "text file").close()  # a directory, FIFO or device is refused here, at once
        return path
    entry = catalog[corpus]
    target, from_env = _catalog_path(corpus)
    if from_env:
        if not target.is_file():
            raise CharrnnError(f"{CORPORA_ENV}={shown(os.environ[CORPORA_ENV])} holds no {corpus}.txt")
        return target
    if target.is_file() and file_sha256(target) == entry["sha256"]:
        return target
    _download(entry["url"], entry["sha256"], target, quiet)
    return target


def run_corpus(recorded: str, sha256: str, quiet: bool = False) -> Path:
    """The corpus a run trained on: the file it recorded, while that still holds the same text; else the
    catalog corpus with that text (read from $CHARRNN_CORPORA, else downloaded); else one line."""
    path = expand_user(recorded)
    if path.is_file() and file_sha256(path) == sha256:
        return path
    name = next((n for n, entry in load_catalog().items() if entry["sha256"] == sha256), None)
    if name is not None:
        return resolve_corpus(name, quiet)
    state = "has changed" if path.exists() else "is not there any more"
    raise CharrnnError(f"the run's corpus, {shown(recorded)}, {state}: name a corpus to use instead")


def _catalog_path(name: str) -> tuple[Path, bool]:
    """Where a catalog corpus is read from, and whether that is the $CHARRNN_CORPORA copy."""
    local = os.environ.get(CORPORA_ENV)
    if local:
        return expand_user(local) / f"{name}.txt", True
    if os.access(REPO_CORPORA, os.W_OK):
        return REPO_CORPORA / f"{name}.txt", False
    return _download_folder() / f"{name}.txt", False


def _download_folder() -> Path:
    """Where downloads are kept when the repository's corpora/ cannot be written: ~/.cache/charrnn/corpora,
    or, with no home folder at all (HOME unset and no passwd entry: a container run with --user), a
    folder of this user's in the temporary folder. `charrnn corpus list` says which."""
    try:
        return Path.home() / ".cache" / "charrnn" / "corpora"
    except (RuntimeError, KeyError):
        return Path(tempfile.gettempdir()) / f"charrnn-{os.getuid()}" / "corpora"


def corpus_status(name: str) -> str:
    path, from_env = _catalog_path(name)
    if path.is_file():
        return f"local: {shown(path)}"
    if from_env:
        return f"missing: {shown(path)} ({CORPORA_ENV} is set, so nothing is downloaded)"
    return f"downloaded on first use to {shown(path)}"


def _download(url: str, sha256: str, target: Path, quiet: bool) -> None:
    """Fetch `url` into `target`, kept only when it is whole and its sha256 matches."""
    if not quiet:
        print(f"downloading {url} -> {shown(target)}", file=sys.stderr)
    with atomic_file(target) as out:
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except OSError as e:
            raise CharrnnError(
                f"cannot download {url} ({reason(e)}); set {CORPORA_ENV} to a folder holding {target.name}"
            ) from None
        if h.hexdigest() != sha256:
            raise CharrnnError(f"download of {url} does not match its sha256 {sha256[:12]}...; not kept")

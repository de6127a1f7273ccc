"""charrnn as users install it: the sdist and the wheel are built from this checkout, their metadata is
checked as PyPI would (`twine check`), and the wheel is installed, not editable, into a fresh virtual
environment outside the source tree, where every kind of model trains, samples, evaluates, inspects and
compares (tests/wheel_driver.py). A file left out of the wheel fails here, though an editable install
would hide it.

The fresh environment gets charrnn only from the wheel. Its dependencies are this environment's, linked
by a path file (no network and no second copy of torch); `pip check` there verifies the wheel's declared
requirements are met, and test_every_import_is_declared checks that charrnn imports nothing it does not
declare."""

import ast
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from conftest import make_text

ROOT = Path(__file__).resolve().parents[1]
DIST = "charrnn_toolkit"  # the distribution name's wheel spelling (pyproject.toml's project.name)

pytestmark = pytest.mark.slow


def _run(*cmd, **kw):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # no isolation: the build backend is this environment's setuptools (the `test` extra), so no network
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    return out


def test_sdist_and_wheel_carry_every_package_and_their_metadata_would_upload(dist):
    wheel, = dist.glob(f"{DIST}-*.whl")
    sdist, = dist.glob(f"{DIST}-*.tar.gz")
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "charrnn").rglob("__init__.py")}
    assert packages and all(f"{p}/__init__.py" in names for p in packages), sorted(packages)
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "charrnn").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert "charrnn/catalog.json" in names and "charrnn/web/write.html" in names
    web = {str(p.relative_to(ROOT)) for p in (ROOT / "charrnn" / "web").iterdir()}  # the pages' files
    assert web and web <= names, sorted(web - names)


def test_the_installed_wheel_trains_samples_evaluates_inspects_and_compares_every_family(dist, tmp_path):
    wheel, = dist.glob(f"{DIST}-*.whl")
    venv = tmp_path / "venv"  # outside the source tree
    _run(sys.executable, "-m", "venv", "--without-pip", venv)  # its own pip would shadow the dependencies'
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", py]
    _run(*pip, "install", "--quiet", "--no-index", "--no-deps", wheel)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # this environment's dependencies
    _run(*pip, "check")
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARRNN_FAMILIES")}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    out = _run(py, ROOT / "tests" / "wheel_driver.py", corpus, tmp_path / "work", cwd=tmp_path, env=env)
    where = re.search(r"^charrnn from (.+)$", out, re.M).group(1)
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not this checkout
    assert "compare: lstm, transformer" in out and out.count(", exported\n") == 6
    assert "serve: the page and a completion" in out
    # the console script users type
    assert _run(venv / "bin" / "charrnn", "--version", cwd=tmp_path, env=env).startswith("charrnn, version")


def _imported_packages() -> set[str]:
    found = set()
    for path in (ROOT / "charrnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_import_is_declared():
    """charrnn imports only the standard library, itself and what pyproject.toml declares (optional
    extras included: their imports are guarded where a command needs them)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("-", "_")
                for r in project["dependencies"] + [r for e, rs in project["optional-dependencies"].items()
                                                     if e != "test" for r in rs]}
    undeclared = {m for m in _imported_packages() - set(sys.stdlib_module_names) - {"charrnn"}
                  if m.lower() not in declared}
    assert not undeclared, undeclared

"""The documentation runs: every command in a fenced block of README.md and docs/*.md, the README's first
screen, and a fresh clone that does what that first screen says.

Every page runs top to bottom in a fresh folder of its own, as a reader pasting its blocks one after another
would, so a block may use what an earlier one made (a run, an exported file). The folder holds:
- `checkpoints/demo`: a tiny run trained once per session on the tinyshakespeare stand-in (what `make demo`
  leaves, in small);
- `my.txt`, `other.txt`, `opening.txt`: small texts, for the files the docs tell a reader to bring;
- and `CHARRNN_CORPORA` names a folder whose `tinyshakespeare.txt` is a small play-like text.

Shell blocks (unlabelled, `bash`, `sh`; `console`: the `$ ` lines) run line by line, a line ending in `\\`
joined to the next; `python` blocks run whole; anything else (`text`: output) is not run. A `charrnn` command
runs in this process (click's CliRunner: one interpreter, fast), with the budget's timing of presets replaced
by a fixed speed (every preset is then chosen as on a slow machine, without the seconds of timing); one with
shell syntax (`$(...)`, a pipe) or variables set before it runs in bash, with `charrnn` on the PATH as this
checkout's. The substitutions below make each command take a second or two; the skip table names what cannot
run in a test, each with its reason, and an entry that matches no command any more fails
`test_every_skip_still_matches_a_command`. A command that fails (a mistyped option, a missing file) fails the
page's test, with the command and its output.

What needs a child process is the slow part (`test_page_slow_commands`): `compare` (its models train in
children), `serve` (in the background, then the blocks that talk to it) and whatever runs through bash;
torchrun has a test of its own (`test_page_torchrun_commands`), and the README's first screen in a fresh clone
is `test_fresh_clone_runs_the_first_screen`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHARED_CORPUS, TINY, make_text

from benchmarks import readme as readme_script
from charrnn import presets
from charrnn.cli import cli
from charrnn.training import RunOptions, train

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}
FIRST_SCREEN = 60  # lines
SERVER = "http://127.0.0.1:8000"  # where the docs' clients find `charrnn serve`

# (regex on the command as written, reason): commands that do not run here.
SKIP = [
    (r"^make demo$", "runs in test_fresh_clone_runs_the_first_screen: a clone, its venv, DEMO_TIME=10s"),
    (r"^\. \.venv/bin/activate$", "the same fresh-clone test: in this process there is no venv to activate"),
    (r"^python3 -m venv \.venv\b", "makes a virtual environment; tests/test_wheel.py installs the wheel into a fresh one"),
    (r"^pip install\b", "needs the network (PyPI, PyTorch's index); tests/test_wheel.py installs from the checkout"),
    (r"^make (test|test-fast)$", "the test suite itself"),
    (r"^bash \.ci/run$", "CI itself: installs Chromium, then runs make test"),
    (r"^make (bench|bench-\w+|quality|pictures)\b", "benchmarks: minutes each, and only meaningful on a quiet machine"),
    (r"^torchrun --standalone --nproc_per_node=4\b", "four GPUs; test_page_torchrun_commands runs the two-CPU example"),
    (r"^torchrun --nnodes=2\b", "two machines"),
    (r"--device cuda\b", "needs a CUDA GPU (tests/test_speed.py and benchmarks/gpu.py cover it where there is one)"),
    (r"\bupload_folder\(", "needs the network and a Hugging Face token"),
]

# (regex, replacement, reason): applied in order to each command before it runs ({...}: the test's own paths).
SUBSTITUTIONS = [
    (r"^((?:\w+=\S+ )*(?:torchrun .*-m )?charrnn train\b.*)$", r"\1 --max-steps 1",
     "training stops after one step (the first stop wins); --max-time still parses and sets the budget"),
    (r"^(charrnn compare\b.*?)--max-time \S+(.*)$", r"\1--max-time 2s\2 --params 20k",
     "each model of a comparison trains for 2 s at about 20k parameters"),
    (r"^((?:\w+=\S+ )*charrnn serve\b.*)$", r"\1 --port 0", "a server takes any free port, and says which"),
    (re.escape(SERVER), "{server}", "the clients talk to the server the page started last"),
    (r"\bRUN\b", "checkpoints/demo", "RUN stands for any run: the tiny demo run"),
    (r"CHARRNN_CORPORA=\S+", "CHARRNN_CORPORA={corpora}", "the test's corpora: a small tinyshakespeare"),
    (r"PYTHONPATH=tests\b", "PYTHONPATH={root}/tests:{root}", "the page runs in a folder of its own, not the checkout"),
    (r"max_steps=\d+", "max_steps=3", "a Python training loop stops after 3 steps"),
]

PRESET_SPEED = 1_000.0  # chars/s the budget's timing reports for every preset: the small presets, no timing


@dataclass
class Command:
    page: Path
    line: int  # where it starts on its page
    text: str  # as written: continuation lines joined; a python block whole
    python: bool = False

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _fences(markdown: str):
    """(language, first line number, lines) of each fenced block; indented fences (in a list) included."""
    lines, i = markdown.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```\s*(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start, body = len(m.group(1)), m.group(2), i + 2, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        yield lang, start, body


def commands(page: Path) -> list[Command]:
    """Every command of a page's fenced shell and python blocks, in order."""
    found = []
    for lang, start, body in _fences(page.read_text(encoding="utf-8")):
        if lang == "python":
            found.append(Command(page, start, textwrap.dedent("\n".join(body)), python=True))
        elif lang in SHELL:
            pending, first = "", 0
            for n, raw in enumerate(body, start):
                line = raw.strip()
                if lang == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                if not pending and (not line or line.startswith("#")):
                    continue
                first = first or n
                if line.endswith("\\"):
                    pending += line[:-1] + " "
                    continue
                found.append(Command(page, first, strip_comment(pending + line)))
                pending, first = "", 0
    return found


def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a `#` that starts a word, outside quotes)."""
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line.rstrip()


def shell_blocks(lines: list[str]) -> list[list[str]]:
    """The commands of each fenced shell block in `lines`, comments left out."""
    page = "\n".join(lines)
    return [[strip_comment(x.strip()) for x in body if x.strip() and not x.strip().startswith("#")]
            for lang, _, body in _fences(page) if lang in SHELL]


def first_screen(text: str) -> list[str]:
    """The README's lines before its first section heading."""
    lines = text.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("## "))]


# --- how a command runs ------------------------------------------------------------------------------------
class DocCommandFailed(AssertionError):
    pass


def skip_reason(text: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, text, re.MULTILINE)), None)


def _ansi_c(text: str) -> str:
    """bash's $'...' strings, which shlex does not read, as plain quoted ones."""
    return re.sub(r"\$'((?:[^'\\]|\\.)*)'", lambda m: shlex.quote(codecs.decode(m.group(1), "unicode_escape")), text)


def _words(text: str) -> list[str] | None:
    """The command's words when it is one plain command (no shell syntax, no variables set before it), else None."""
    if "$(" in text or "`" in text:
        return None
    lexer = shlex.shlex(_ansi_c(text), posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = list(lexer)
    if any(set(w) <= set("();<>|&") for w in words) or (words and "=" in words[0]):
        return None
    return words


def kind(command: Command) -> str:
    """skip; fast (in this process); slow (a child process: compare's, a server and its clients, bash); torchrun."""
    text = command.text
    if skip_reason(text):
        return "skip"
    if re.match(r"^(?:\w+=\S+ )*torchrun\b", text):
        return "torchrun"
    if SERVER in text or re.match(r"^(?:\w+=\S+ )*charrnn (compare|serve)\b", text):
        return "slow"
    if command.python or re.match(r"^export \w+=\S+$", text):
        return "fast"
    words = _words(text)
    return "fast" if words and words[0] == "charrnn" else "slow"


@dataclass
class Workspace:
    """A page's folder, its environment, and the server it started last."""

    path: Path
    corpora: Path
    env: dict = field(default_factory=dict)  # set by `export` lines, for the rest of the page
    server: subprocess.Popen | None = None
    server_url: str = ""
    server_log: list = field(default_factory=list)

    def fill(self, text: str) -> str:
        for pattern, replacement, _ in SUBSTITUTIONS:
            text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
        return (text.replace("{server}", self.server_url).replace("{corpora}", str(self.corpora))
                .replace("{root}", str(ROOT)))

    def environment(self, bin_dir: Path) -> dict:
        return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                "CHARRNN_CORPORA": str(self.corpora), **self.env}

    def stop_server(self) -> None:
        if self.server is None:
            return
        os.killpg(self.server.pid, signal.SIGTERM)  # as Ctrl-C would: the server stops and exits 0
        try:
            code = self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            raise
        finally:
            self.server = None
        assert code == 0, "".join(self.server_log)


def _shim(folder: Path) -> Path:
    """A folder holding `charrnn`: this interpreter running this checkout's charrnn."""
    folder.mkdir(exist_ok=True)
    script = folder / "charrnn"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m charrnn "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return folder


def run_command(command: Command, ws: Workspace) -> str:
    """Run one command of the docs in `ws`; its output. DocCommandFailed if it fails or cannot run here."""
    text = ws.fill(command.text)
    label = f"{command.where()}: {command.text}" + (f"\n  ran as: {text}" if text != command.text else "")
    if command.python:
        namespace = {"__name__": "__doc__"}
        try:
            exec(compile(text, command.where(), "exec"), namespace)
        except Exception as e:
            raise DocCommandFailed(f"{label}\n  raised {type(e).__name__}: {e}") from e
        return ""
    if m := re.match(r"^export (\w+)=(\S+)$", text):
        ws.env[m.group(1)] = m.group(2)
        return ""
    words = _words(text)
    if re.match(r"^(?:\w+=\S+ )*charrnn serve\b", text):
        return _start_server(text, ws, label)
    if words and words[0] == "charrnn":
        result = CliRunner().invoke(cli, words[1:], env=ws.env, catch_exceptions=False)
        if result.exit_code != 0:
            raise DocCommandFailed(f"{label}\n  exit code {result.exit_code}:\n{result.output}")
        return result.output
    if not re.match(r"^(?:\w+=\S+ )*(charrnn|python3?|curl|torchrun)\b", text):
        raise DocCommandFailed(f"{label}\n  no way to run this here: make it run, or add it to SKIP with a reason")
    done = subprocess.run(["bash", "-c", text], check=False, cwd=ws.path, env=ws.environment(_shim(ws.path.parent / "bin")),
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise DocCommandFailed(f"{label}\n  exit code {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _start_server(text: str, ws: Workspace, label: str) -> str:
    ws.stop_server()
    ws.server_log = []
    proc = subprocess.Popen(["bash", "-c", text], cwd=ws.path, env=ws.environment(_shim(ws.path.parent / "bin")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    ws.server = proc
    threading.Thread(target=lambda: ws.server_log.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + 120
    while not (m := re.search(r"on http://(\S+?):(\d+)/", "".join(ws.server_log))):
        if proc.poll() is not None or time.monotonic() > deadline:
            ws.server = None
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise DocCommandFailed(f"{label}\n  the server did not start:\n{''.join(ws.server_log)}")
        time.sleep(0.1)
    host = "127.0.0.1" if m.group(1) in ("0.0.0.0", "[::]") else m.group(1)
    ws.server_url = f"http://{host}:{m.group(2)}"
    _wait_until_answering(ws.server_url + "/health", deadline)
    return "".join(ws.server_log)


def _wait_until_answering(url: str, deadline: float) -> None:
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.1)


# --- the folder each page runs in --------------------------------------------------------------------------
def play(n_chars: int, seed: int) -> str:
    """make_text's play, with the speakers and characters the docs' primes use."""
    return make_text(n_chars, seed) + "\nROMEO:\nIs this my good lord's night? Speak, and well.\n\n"


@pytest.fixture(scope="session")
def doc_world(tmp_path_factory) -> dict:
    """What every page's folder starts from: the corpora folder and the tiny demo run, made once."""
    root = tmp_path_factory.mktemp("docs")
    corpora = root / "corpora"
    corpora.mkdir()
    (corpora / "tinyshakespeare.txt").write_text(play(30_000, seed=5), encoding="utf-8")
    demo = root / "demo"
    train(RunOptions(corpus=str(corpora / "tinyshakespeare.txt"), out=demo, precision="fp32", device="cpu",
                     quiet=True, sample_len=0), dict(TINY, max_steps=40))
    return {"corpora": corpora, "demo": demo}


@pytest.fixture
def workspace(doc_world, tmp_path, monkeypatch):
    folder = tmp_path / "page"
    folder.mkdir()
    shutil.copytree(doc_world["demo"], folder / "checkpoints" / "demo")  # (older than any run the page trains)
    (folder / "my.txt").write_text(play(20_000, seed=11), encoding="utf-8")
    (folder / "other.txt").write_text("".join(f"item {i}: {{value}} café = {i * 7 % 13}\n" for i in range(800)),
                                      encoding="utf-8")
    (folder / "opening.txt").write_text("KING:\nWhat say you to this?\n\nQUEEN:\n", encoding="utf-8")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CHARRNN_CORPORA", str(doc_world["corpora"]))
    monkeypatch.setattr(presets, "measure_speed", lambda *args, **kw: PRESET_SPEED)
    ws = Workspace(folder, doc_world["corpora"])
    yield ws
    ws.stop_server()


def run_page(page: Path, ws: Workspace, which: str) -> int:
    """Run the page's commands of one kind, in order; how many ran."""
    ran = 0
    for command in commands(page):
        if kind(command) == which:
            t0 = time.perf_counter()
            run_command(command, ws)
            print(f"{time.perf_counter() - t0:6.1f} s  {command.where()}: {command.text[:80]}")
            ran += 1
    return ran


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# --- the tests ---------------------------------------------------------------------------------------------
def test_first_screen_holds_the_three_commands_within_60_lines():
    text = README.read_text(encoding="utf-8")
    screen = first_screen(text)
    assert len(screen) <= FIRST_SCREEN, f"the README's first screen is {len(screen)} lines"
    block = shell_blocks(screen)[0]
    assert block[:2] == ["make demo", ". .venv/bin/activate"] and len(block) == 3, block
    assert block[2].startswith("charrnn sample checkpoints/demo "), block
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--out checkpoints/demo" in readme_script.demo_train_command(makefile, "2m")  # where the demo writes
    assert re.search(r"^DEMO_TIME \?= ", makefile, re.MULTILINE)
    # Every example that means the demo's run says checkpoints/demo.
    assert "tinyshakespeare-lstm" not in text + "".join(p.read_text(encoding="utf-8") for p in PAGES)


def test_readme_shows_the_last_row_of_readme_jsonl():
    """The first screen's output is the text the README's own sample command printed, with the loss of the
    checkpoint that printed it: benchmarks/readme.py wrote both, and this row is the last it wrote."""
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "readme.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    row = rows[-1]
    text = README.read_text(encoding="utf-8")
    assert readme_script.readme_block(text) == readme_script.render(row), "run `make pictures`"
    assert row["commands"][1] == readme_script.readme_sample_command(text), \
        "the README's sample command changed since its output was made: run `make pictures`"
    words = shlex.split(row["commands"][1])
    assert row["sample"].startswith(words[words.index("--prime") + 1])  # what that command prints first
    for picture in row["pictures"].values():
        path = ROOT / picture["file"]
        assert path.is_file() and path.stat().st_size < 200_000, path
        assert f"({picture['file']})" in "\n".join(first_screen(text))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_commands(page, workspace):
    run_page(page, workspace, "fast")


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(kind(c) == "slow" for c in commands(p))], ids=page_id)
def test_page_slow_commands(page, workspace):
    """compare (2 s a model), serve (in the background, then the clients that talk to it), bash."""
    assert run_page(page, workspace, "slow")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("page", [p for p in PAGES if any(kind(c) == "torchrun" for c in commands(p))], ids=page_id)
def test_page_torchrun_commands(page, workspace):
    assert run_page(page, workspace, "torchrun")


def test_every_command_is_run_or_skipped_for_a_reason():
    kinds = {kind(c) for p in PAGES for c in commands(p)}
    assert kinds <= {"skip", "fast", "slow", "torchrun"}
    assert sum(kind(c) == "fast" for p in PAGES for c in commands(p)) >= 30  # the docs have commands to run


def test_every_skip_still_matches_a_command():
    every = [c.text for p in PAGES for c in commands(p)]
    stale = [pattern for pattern, _ in SKIP if not any(re.search(pattern, t, re.MULTILINE) for t in every)]
    assert not stale, f"skip entries that match no command in the docs any more: {stale}"


def test_every_substitution_is_used():
    every = "\n".join(c.text for p in PAGES for c in commands(p))
    unused = [pattern for pattern, _, _ in SUBSTITUTIONS if not re.search(pattern, every, re.MULTILINE)]
    assert not unused, f"substitutions that change no command in the docs: {unused}"


def test_a_mistyped_option_in_the_docs_fails(workspace):
    with pytest.raises(DocCommandFailed, match="No such option '--lenght'"):
        run_command(Command(README, 1, "charrnn sample checkpoints/demo --lenght 20"), workspace)
    with pytest.raises(DocCommandFailed, match="checkpoints/nothing"):
        run_command(Command(README, 1, "charrnn eval checkpoints/nothing"), workspace)
    with pytest.raises(DocCommandFailed, match="no way to run this here"):
        run_command(Command(README, 1, "frobnicate --now"), workspace)
    with pytest.raises(DocCommandFailed, match="NameError"):
        run_command(Command(README, 1, "print(undefined_name)", python=True), workspace)
    with pytest.raises(DocCommandFailed, match="exit code"):  # through bash, too
        run_command(Command(README, 1, "charrnn sample checkpoints/demo --seed $(echo x)"), workspace)


def test_the_parser_reads_blocks_as_a_reader_pastes_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        ```
        # a comment
        charrnn train my.txt \\
            --max-time 60s   # a trailing comment
        ```

        - a list item:

          ```python
          print(1)
          ```

        ```text
        output, never run
        ```

        ```console
        $ charrnn sample
        what it printed
        ```
        """), encoding="utf-8")
    found = commands(page)
    assert [(c.text, c.python, c.line) for c in found] == [
        ("charrnn train my.txt  --max-time 60s", False, 3),
        ("print(1)", True, 10), ("charrnn sample", False, 18)]
    assert _words(_ansi_c("charrnn sample --stop $'\\n\\n'")) == ["charrnn", "sample", "--stop", "\n\n"]
    assert _words("A=1 charrnn train x") is None and _words("charrnn sample | head") is None


# --- a fresh clone -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fresh_clone_runs_the_first_screen(tmp_path):
    """A fresh clone, then the README's first screen as written, in bash: `make demo` (DEMO_TIME=10s), activate,
    the sample; then the "your own text" block on a small my.txt, with `--max-time 10m` as 10s."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--git-dir"], capture_output=True, check=False).returncode:
        pytest.skip("not a git checkout: nothing to clone")
    venv_charrnn = Path(sys.prefix) / "bin" / "charrnn"
    if sys.prefix == sys.base_prefix or not venv_charrnn.is_file():
        pytest.skip("the tests do not run in a virtual environment with charrnn installed (as make test's .venv)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(sys.prefix)  # the running venv stands in for the one make would create
    # make reinstalls when pyproject.toml is newer than .venv/bin/charrnn, and a clone's files are new: make
    # the clone's older, so `make demo` uses this venv as it is (an install would need the network).
    then = venv_charrnn.stat().st_mtime - 60
    os.utime(clone / "pyproject.toml", (then, then))
    if SHARED_CORPUS.is_file():
        corpora = SHARED_CORPUS.parent
    else:
        corpora = tmp_path / "corpora"
        corpora.mkdir()
        (corpora / "tinyshakespeare.txt").write_text(play(200_000, seed=5), encoding="utf-8")
    (clone / "my.txt").write_text(play(30_000, seed=3), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    # The venv's charrnn may be an editable install of another checkout: the clone's own code runs first.
    env.update(DEMO_TIME="10s", CHARRNN_CORPORA=str(corpora), PYTHONPATH=str(clone))
    blocks = shell_blocks(first_screen((clone / "README.md").read_text(encoding="utf-8")))
    assert blocks[0][:2] == ["make demo", ". .venv/bin/activate"]
    lines = [line for block in blocks for line in block]
    script = ["set -e"]
    for line in lines:
        as_run = re.sub(r"--max-time 10m\b", "--max-time 10s", line)
        script += [f"printf '\\n>>> %s\\n' {shlex.quote(line)}", as_run]  # (a sample may not end its last line)
    done = subprocess.run(["bash", "-c", "\n".join(script)], check=False, cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600)
    outputs = {m.group(1): m.group(2).strip("\n")
               for m in re.finditer(r"^>>> (.*)\n((?:(?!>>> ).*\n?)*)", done.stdout, re.MULTILINE)}
    assert done.returncode == 0, f"stopped after:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert len(outputs) == len(lines)
    sample_line = next(line for line in lines if line.startswith("charrnn sample checkpoints/demo"))
    printed = outputs[sample_line]
    assert printed.startswith("ROMEO:") and len(printed.strip()) > len("ROMEO:") + 50, printed
    assert (clone / "checkpoints" / "demo" / "best.pt").is_file()
    assert (clone / "checkpoints" / "my-lstm" / "inspect.html").is_file()  # the newest run, the follow-ups' default

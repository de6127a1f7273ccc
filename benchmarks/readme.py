"""The README's first screen, made from real runs (`make pictures`):

    python benchmarks/readme.py [--demo-time 2m] [--compare-time 60s] [--work benchmarks/runs/readme]

1. The demo: the `charrnn train` line of the Makefile's demo recipe, with DEMO_TIME (`--demo-time`), run
   in WORK (so it writes WORK/checkpoints/demo, as `make demo` writes checkpoints/demo in a checkout).
2. The README's own sample command: the `charrnn sample` line of its first shell block, as written, in
   WORK; its output is the text the README shows.
3. `charrnn eval checkpoints/demo --json`: the validation loss of the checkpoint that sampled.
4. `charrnn inspect checkpoints/demo` and `charrnn compare tinyshakespeare --models lstm,transformer
   --max-time COMPARE_TIME`, and a screenshot of a part of each page (headless Chromium, driven by
   Playwright) in docs/img/inspect.png and docs/img/compare.png.
5. A row appended to benchmarks/readme.jsonl (the commands, the sample, the loss in nats and bits per
   character, the run's model and steps, the machine, the date), and the README's output block rewritten
   from that row (`render`; tests/test_docs.py checks that the README shows the last row).

Every command runs as a child process of this checkout (`python -m charrnn`), with the machine's own thread
count: run it on a quiet machine, since what a timed run learns follows the machine's speed.
`--placeholder REASON` labels the row and the README's block as a stand-in to be made again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks.common import machine  # noqa: E402
from charrnn.families import family_of  # noqa: E402

ROWS = HERE / "readme.jsonl"
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
IMG = ROOT / "docs" / "img"
BEGIN = "<!-- benchmarks/readme.py writes this block from the last row of benchmarks/readme.jsonl -->"
END = "<!-- end of benchmarks/readme.py's block -->"
COMPARE_MODELS = "lstm,transformer"
# The part of each page a picture shows: the first <h2> that matches and the elements after it (this many, or
# None: up to the next <h2>), at most this many CSS pixels tall.
PICTURES = {"inspect": (r"^Cells", None, 640), "compare": (r"^Loss over time", 2, 520)}
WIDTH = 900  # CSS pixels, at scale 1: a picture well under 200 KB
MAX_BYTES = 200_000
FIRST_SCREEN = 60  # lines before the README's first section (tests/test_docs.py holds it to that)


# --- what the README and the Makefile say -------------------------------------------------------------------
def shell_blocks(markdown: str) -> list[list[str]]:
    """The fenced shell blocks (unlabelled, bash, sh) of a Markdown text, each as its command lines."""
    blocks, lines, inside = [], [], None
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and inside is None:
            inside, lines = fence.group(1), []
        elif fence:
            if inside in ("", "bash", "sh", "shell"):
                blocks.append(lines)
            inside = None
        elif inside is not None:
            lines.append(line)
    return blocks


def readme_sample_command(readme: str) -> str:
    """The `charrnn sample` line of the README's first shell block, its comment left out."""
    for line in shell_blocks(readme)[0]:
        if line.strip().startswith("charrnn sample"):
            return shlex.join(shlex.split(line, comments=True))
    raise SystemExit("the README's first shell block has no `charrnn sample` line")


def demo_train_command(makefile: str, demo_time: str) -> str:
    """The `charrnn train` line of the Makefile's demo recipe, DEMO_TIME filled in."""
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    line = next(x.strip() for x in recipe.splitlines() if "charrnn train" in x)
    return line.replace("$(BIN)/charrnn", "charrnn").replace("$(DEMO_TIME)", demo_time)


# --- the README's block -------------------------------------------------------------------------------------
def describe_machine(row: dict) -> str:
    m = row["machine"]
    where = m["cuda"] if m.get("cuda") else f"{m['cpu']} ({m['cpus']} cores"
    return f"{where}, {row['precision']})" if not m.get("cuda") else f"{where} ({row['precision']})"


def render(row: dict) -> str:
    """The README's output block (the markers included) for a row of readme.jsonl."""
    lines = [BEGIN]
    if row.get("placeholder"):
        lines += [*textwrap.wrap(f"**Placeholder** ({row['placeholder']}): `make pictures` makes this block and "
                                 f"the pictures below again, from real runs.", 110), ""]
    prose = (f"After `make demo` ({row['demo_time']} of training) on {describe_machine(row)}, the last command "
             f"printed this. The checkpoint it sampled, the run's best ({row['model']}, step {row['step']:,}), "
             f"scores {row['val_loss_nats']:.3f} nats ({row['val_bpc']:.3f} bits) per character on "
             f"tinyshakespeare's validation split; from `benchmarks/readme.jsonl` ({row['date']}), written by "
             f"`benchmarks/readme.py`:")
    lines += [*textwrap.wrap(prose, 110), "", "```text", *row["sample"].rstrip("\n").splitlines(), "```", END]
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """The output block the README holds now (markers included)."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[start:end]


def write_readme(row: dict, path: Path = README) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(readme_block(text), render(row)), encoding="utf-8")


# --- running --------------------------------------------------------------------------------------------------
def charrnn(args: list[str], work: Path, capture: bool = True) -> str:
    """`charrnn ARGS` as a child process of this checkout, in `work`; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print("$ " + shlex.join(["charrnn", *args]), file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "charrnn", *args], cwd=work, env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def command_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "charrnn", command
    return words[1:]


def screenshot(page: Path, heading: str, elements: int | None, max_height: int, out: Path) -> dict:
    """The first <h2> of `page` matching `heading` (a regex) and the `elements` after it (None: up to the next
    <h2>), at most `max_height` CSS pixels tall, as a PNG."""
    from playwright.sync_api import sync_playwright  # the test extra's; only this step needs it

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": WIDTH, "height": 800}, device_scale_factor=1)
            tab.goto(page.resolve().as_uri())
            tab.wait_for_load_state("load")
            box = tab.evaluate("""([pattern, count]) => {
                const re = new RegExp(pattern, "i");
                const head = [...document.querySelectorAll("h2")].find(h => re.test(h.textContent));
                if (!head) return null;
                const y = el => el.getBoundingClientRect();
                let bottom = y(head).bottom, el = head.nextElementSibling;
                for (let n = 0; el && el.tagName !== "H2" && (count === null || n < count); n++) {
                    bottom = Math.max(bottom, y(el).bottom);
                    el = el.nextElementSibling;
                }
                return {top: y(head).top + window.scrollY, bottom: bottom + window.scrollY};
            }""", [heading, elements])
            if box is None:
                raise SystemExit(f"{page}: no <h2> matches {heading!r}")
            top = max(0, box["top"] - 8)
            clip = {"x": 0, "y": top, "width": WIDTH, "height": min(max_height, box["bottom"] + 8 - top)}
            out.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(out), clip=clip, full_page=True)
        finally:
            browser.close()
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size:,} bytes, over {MAX_BYTES:,}: show a smaller part of the page")
    return {"file": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out), "bytes": size,
            "section": heading}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-time", default="2m", help="the demo's training time (the Makefile's DEMO_TIME)")
    p.add_argument("--compare-time", default="60s", help="each model's time in the compare run")
    p.add_argument("--work", type=Path, default=HERE / "runs" / "readme", help="where the runs go")
    p.add_argument("--rows", type=Path, default=ROWS)
    p.add_argument("--readme", type=Path, default=README, help="the README whose block is written")
    p.add_argument("--img", type=Path, default=IMG, help="where the pictures go")
    p.add_argument("--placeholder", metavar="REASON", help="label the row and the block as a stand-in")
    args = p.parse_args(argv)

    work = args.work.resolve()
    shutil.rmtree(work / "checkpoints" / "demo", ignore_errors=True)  # as `make demo` does
    shutil.rmtree(work / "compare", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    readme = args.readme.read_text(encoding="utf-8")
    train = demo_train_command(MAKEFILE.read_text(encoding="utf-8"), args.demo_time)
    sample = readme_sample_command(readme)

    charrnn(command_args(train), work, capture=False)
    text = charrnn(command_args(sample), work)
    scored = json.loads(charrnn(["eval", "checkpoints/demo", "--json"], work))
    info = json.loads(charrnn(["info", "checkpoints/demo", "--json"], work))
    charrnn(["inspect", "checkpoints/demo", "--out", "inspect.html", "--quiet"], work)
    compare = ["compare", "tinyshakespeare", "--models", COMPARE_MODELS, "--max-time", args.compare_time,
               "--out", "compare"]
    charrnn(compare, work, capture=False)
    pictures = {name: screenshot(work / page, *PICTURES[name], args.img / f"{name}.png")
                for name, page in (("inspect", "inspect.html"), ("compare", "compare/report.html"))}

    kind = info["model"]["model"]
    row = {"date": datetime.date.today().isoformat(), "demo_time": args.demo_time,
           "commands": [train, sample, "charrnn eval checkpoints/demo --json"],
           "sample": text, "val_loss_nats": round(scored["loss_nats"], 4), "val_bpc": round(scored["bpc"], 4),
           "val_chars": scored["chars"], "model": f"{kind} {family_of(kind).describe(info['model'])}",
           "params": info["params"], "step": info["step"], "precision": info["run"]["precision"],
           "preset": info["run"].get("preset"), "pictures": pictures,
           "compare_command": shlex.join(["charrnn", *compare]), "machine": machine()}
    if args.placeholder:
        row["placeholder"] = args.placeholder
    with open(args.rows, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_readme(row, args.readme)
    print(render(row))
    lines = args.readme.read_text(encoding="utf-8").split("\n## ", 1)[0].count("\n")
    if lines > FIRST_SCREEN:
        print(f"the README's first screen is now {lines} lines, over {FIRST_SCREEN}: shorten the sample command's "
              f"--length", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

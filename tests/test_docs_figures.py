"""Every figure in benchmarks/README.md sits beside the script that measures it.

The rule (notes of the project): a figure comes from a row of a committed benchmarks/*.jsonl, written by a
committed script named next to it. What a test can hold simply: outside the generated "Current results",
every section (a heading and the text up to the next heading) with a figure in it names a script that
exists, `benchmarks/NAME.py` or `python -m benchmarks[.NAME]`. A figure is a number with a unit (nats,
bits, chars/s, x, %, s, ms, MB, ...), a number with three or more decimals (a loss), or a decimal number
in a table row.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import summary

REPO = Path(__file__).resolve().parent.parent
README = REPO / "benchmarks" / "README.md"

NUMBER = r"(?<![\w.\-−])[-−+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?[kM]?"
UNIT = re.compile(NUMBER + r"\s?(?:nats|bits|chars/s|characters per second|[GM]FLOP/s|GMAC/s|[MG]B/s|[KMG]iB|[MG]B"
                           r"|µs|ms|s(?![\w/])|%|[x×](?![\w×]|\s*\d))")
LOSS = re.compile(r"(?<![\w.])\d+\.\d{3,}(?![\d.])")
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\d.])")
SCRIPT = re.compile(r"benchmarks/(\w+)\.py|python -m benchmarks(?:\.(\w+))?")


def is_figure(line: str) -> bool:
    table_row = line.startswith("|") and not set(line) <= set("|-: ")
    return bool(UNIT.search(line) or LOSS.search(line) or (table_row and DECIMAL.search(line)))


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, lines) for each heading outside code blocks; the text before the first is ("", ...)."""
    out, fenced = [("", [])], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            out.append((line, []))
        out[-1][1].append(line)
    return out


def scripts_named(text: str) -> set[str]:
    return {f"benchmarks/{a or b or '__main__'}.py" for a, b in SCRIPT.findall(text)}


def unbacked_figures(text: str, repo: Path = REPO) -> list[str]:
    """'heading: line' for each figure in a section that names no existing script (the generated section left
    out), and 'heading: names X, which does not exist' for a named script that is not there."""
    start, end = text.find(summary.BEGIN), text.find(summary.END)
    if start >= 0 and end > start:
        text = text[:start] + text[end + len(summary.END):]
    found = []
    for heading, lines in sections(text):
        body = "\n".join(lines)
        named = scripts_named(body)
        missing = sorted(s for s in named if not (repo / s).is_file())
        found += [f"{heading}: names {s}, which does not exist" for s in missing]
        if not named - set(missing):
            found += [f"{heading}: {line}" for line in lines if is_figure(line)]
    return found


def test_the_check_finds_figures_without_a_script_and_scripts_that_do_not_exist(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "quality.py").write_text("")
    text = "\n".join([
        "# Benchmarks", "", "Every figure comes from a row.",
        "## Quality: `benchmarks/quality.py`", "", "ours 1.4188 nats, 63.7 s of wall time, 1.03x, 12 %",
        "## Speed", "", "a step takes 25.8 ms", "the loss read 1.4080 then", "| model | steps |", "|---|---|",
        "| lstm | 1.5 |", "| rnn | 2,224 |", "trained at --max-time 60s", "```", "# 12 ms in a fence", "```",
        "## Shapes", "", "an LSTM 2x512 at 16 × 64, lr 4e-3, torch 2.13.0, on 2026-12-02", "",
        "## Ghost: `benchmarks/ghost.py`", "", "it read 1.2345", "",
        "## Current results", summary.BEGIN, "| quality | 1.4188 nats |", summary.END,
    ])
    found = unbacked_figures(text, tmp_path)
    assert found == ["## Speed: a step takes 25.8 ms", "## Speed: the loss read 1.4080 then", "## Speed: | lstm | 1.5 |",
                     "## Speed: trained at --max-time 60s", "## Speed: # 12 ms in a fence",
                     "## Ghost: `benchmarks/ghost.py`: names benchmarks/ghost.py, which does not exist",
                     "## Ghost: `benchmarks/ghost.py`: it read 1.2345"]


def test_every_figure_in_benchmarks_readme_sits_beside_a_committed_script():
    found = unbacked_figures(README.read_text(encoding="utf-8"))
    assert not found, "figures with no script named in their section:\n" + "\n".join(found)


def test_the_speed_suite_counts_as_a_script():
    assert scripts_named("run `python -m benchmarks --quick`; `python -m benchmarks.serve`") == {
        "benchmarks/__main__.py", "benchmarks/serve.py"}


# The README and the pages of docs/ explain; their figures are the measured kind only (a loss, a speed, a
# ratio of times), since they also hold settings and sizes that are not measurements.
MEASURED = re.compile(NUMBER + r"\s?(?:nats|bits|chars/s|characters per second|[GM]FLOP/s|GMAC/s|[MG]B/s|µs|ms(?!\w)"
                      r"|times (?:as|faster|slower|an?|its|the)\b|-fold)|(?<![\w.:])\d+\.\d{3,}(?![\d.])")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def unbacked_measurements(text: str, repo: Path = REPO) -> list[str]:
    found = []
    for heading, lines in sections(text):
        named = {s for s in scripts_named("\n".join(lines)) if (repo / s).is_file()}
        if not named:
            found += [f"{heading}: {line}" for line in lines if MEASURED.search(line)]
    return found


def test_the_pages_check_finds_a_measurement_without_a_script_and_lets_settings_be():
    text = "\n".join(["# Training", "lr 2e-3, dropout 0.25, 4x GELU MLP, --max-time 60s, 90 %",
                      "(arXiv:2410.01201)", "## Speed", "it trains 2,874 chars/s, 2.5 times as fast",
                      "## Quality", "1.4188 nats below (`benchmarks/quality.py`)"])
    assert unbacked_measurements(text) == ["## Speed: it trains 2,874 chars/s, 2.5 times as fast"]


def test_every_measurement_in_the_readme_and_docs_sits_beside_a_committed_script():
    found = [f"{page.relative_to(REPO)} {line}" for page in PAGES
             for line in unbacked_measurements(page.read_text(encoding="utf-8"))]
    assert not found, "measured figures with no script named in their section:\n" + "\n".join(found)

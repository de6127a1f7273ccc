"""Run inside a fresh virtual environment where charrnn is installed from its wheel (tests/test_wheel.py):
every kind of model is trained for a few steps, sampled, evaluated, inspected, described and exported
(a model folder that samples as the run does, and a page), and two of them are compared, all through the
installed `charrnn` command's own code (click's test runner, one interpreter: torch is imported once);
then one is served in-process (the serve extra's app, its page read from the package data). Exits
non-zero, saying why, at the first thing that fails."""

import json
import sys
from pathlib import Path

from click.testing import CliRunner

import charrnn
from charrnn import GPT, CharRNN, Sampler, Trainer  # noqa: F401  (the public names, from the wheel)
from charrnn.cli import cli
from charrnn.families import family_of, kinds

# every kind's shape, as small as it goes: only the options its family reads
COMMON = ["--layers", "1", "--hidden", "16", "--batch-size", "4", "--max-steps", "3", "--lr", "0.01", "--warmup", "1",
          "--dropout", "0", "--device", "cpu", "--precision", "fp32", "--quiet"]
OWN = {"embed": ["--embed", "8"], "heads": ["--heads", "2"], "context": ["--context", "16"]}


def run(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        sys.exit(f"charrnn {' '.join(map(str, args))} -> exit {result.exit_code}: {result.output}")
    return result.stdout


def main(corpus: Path, work: Path) -> None:
    print("charrnn from", charrnn.__file__)
    for kind in kinds():
        fam = family_of(kind)
        own = [a for option in fam.options for a in OWN.get(option, [])]
        length = [] if "seq_len" in fam.refuses else ["--seq-len", "16"]
        out = work / kind
        run("train", corpus, "--model", kind, "--out", out, *COMMON, *own, *length)
        text = run("sample", out, "--prime", "KING", "--length", "40", "--seed", "1")
        assert text.startswith("KING") and len(text.rstrip("\n")) >= 40, text
        score = json.loads(run("eval", out, corpus, "--json"))
        assert 0 < score["loss_nats"] < 10, score
        inspected = json.loads(run("inspect", out, "--chars", "300", "--show", "50", "--positions", "2", "--quiet", "--json"))
        assert Path(inspected["page"]).is_file(), inspected
        assert kind in run("info", out)
        hf = work / f"{kind}-hf"  # exported as a model folder, it samples what the run does
        run("export", out, "--format", "hf", "-o", hf)
        assert run("sample", hf, "--prime", "KING", "--length", "40", "--seed", "1") == text
        run("export", out, "--format", "html", "-o", work / f"{kind}.html")  # the page's files are in the wheel
        assert "CharrnnSteps" in (work / f"{kind}.html").read_text(encoding="utf-8")
        print(f"{kind}: trained, sampled, evaluated ({score['loss_nats']:.3f} nats), inspected, exported")
    report = work / "compare"
    table = run("compare", corpus, "--models", "lstm,transformer", "--max-time", "2s", "--params", "20k", "--out", report,
                "--device", "cpu", "--precision", "fp32", "--quiet")
    rows = json.loads((report / "report.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["lstm", "transformer"] and (report / "report.html").is_file(), table
    print("compare: lstm, transformer")
    serve(work / "lstm")


def serve(run: Path) -> None:
    """The serve extra's app from the installed wheel: its page (package data) and one completion."""
    from starlette.testclient import TestClient

    from charrnn.serve import App, ServeConfig

    app = App(Sampler.load(run, weights="fp32"), ServeConfig(), run.name)
    with TestClient(app.starlette, base_url="http://localhost") as client:  # (the lifespan starts the worker)
        assert "<textarea" in client.get("/").text
        answer = client.post("/v1/completions", json={"prompt": "KING", "max_tokens": 20}).json()
        assert len(answer["choices"][0]["text"]) == 20, answer
    print("serve: the page and a completion")


if __name__ == "__main__":  # compare spawns processes that import this file again
    main(Path(sys.argv[1]), Path(sys.argv[2]))

from __future__ import annotations

import os

# Before torch is imported (the import below loads it): OpenMP reads this once, when it starts. Two
# threads, as the machines CI runs on have two cores; more would only contend on a larger machine's
# share of the tests' work.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import contextlib  # noqa: E402
import io  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from charrnn.training import RunOptions, train  # noqa: E402

SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"

WORDS = ("the king queen lord shall not be what is this my good sir and to of with thee thou art "
         "hath come go now here there love night day speak know well why O").split()

# Small settings for fast end-to-end runs.
TINY = dict(model="lstm", n_layers=2, hidden=32, embed=16, dropout=0.0, batch_size=4, seq_len=16, max_steps=30,
            lr=1e-2, warmup_steps=5, seed=7)


def make_text(n_chars: int, seed: int = 0) -> str:
    """Play-like text with speakers, lines and punctuation: structure a model can learn quickly."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        speaker = rng.choice(["KING", "QUEEN", "LORD", "FOOL"])
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + rng.choice([",", ".", "!", "?"])
                 for _ in range(rng.randint(1, 4))]
        block = f"{speaker}:\n" + "\n".join(lines) + "\n\n"
        out.append(block)
        size += len(block)
    return "".join(out)[:n_chars]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "play.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny trained run, shared by the sampler, eval and CLI tests (treat it as read-only)."""
    root = tmp_path_factory.mktemp("run")
    path = root / "play.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    out = root / "checkpoints" / "play-lstm"
    train(RunOptions(corpus=str(path), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0),
          dict(TINY, max_steps=60))
    return out


@pytest.fixture(scope="session")
def comparison(tmp_path_factory) -> SimpleNamespace:
    """`charrnn compare` of two tiny RNNs (trained in-process, 120 steps each), as a person sees it off a
    terminal: its report, everything it wrote on stderr, and what it had written when the first training
    began (treat them as read-only)."""
    from charrnn import compare, training

    root = tmp_path_factory.mktemp("comparison")
    corpus = root / "play.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    tiny = {k: v for k, v in TINY.items() if k not in ("model", "seed")}
    cfg = compare.CompareConfig(str(corpus), models=("lstm", "gru"), max_time=60, out=root / "report", device="cpu",
                                precision="fp32", extra=dict(tiny, max_steps=120, eval_interval=40))
    err, at_training = io.StringIO(), []

    def in_process(opts, overrides):  # train_one without its child process
        at_training.append(err.getvalue())
        return training.train(opts, overrides)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(compare, "train_one", in_process)
        report = compare.compare(cfg)
    return SimpleNamespace(report=report, stderr=err.getvalue(), at_training=at_training, out=cfg.out, cfg=cfg)


@pytest.fixture
def shared_corpus() -> Path:
    if not SHARED_CORPUS.is_file():
        pytest.skip("../shared/corpora/tinyshakespeare.txt is not beside this checkout")
    return SHARED_CORPUS


@pytest.fixture(autouse=True)
def _no_env_corpora(monkeypatch):
    monkeypatch.delenv("CHARRNN_CORPORA", raising=False)

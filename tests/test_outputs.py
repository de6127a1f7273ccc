"""Byte fallback without its cost: byte tokens are read but never predicted (ModelConfig.n_outputs), so a run
with them trains exactly as one without; a character outside the vocabulary is scored by a finite rule; old
checkpoints, whose output layer scores every token, keep loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY

from charrnn import checkpoint as ck
from charrnn import data
from charrnn.cli import cli
from charrnn.data import MANY_CHARS, RARE_COUNT
from charrnn.families import build_model, evaluate_model, model_config, param_count
from charrnn.models import unscored_loss
from charrnn.sampler import Sampler
from charrnn.tokenizer import MAX_CODEPOINT
from charrnn.training import RunOptions, train

FAMILY = {"lstm": dict(model="lstm", n_layers=2, hidden=32, embed=8),
          "gru": dict(model="gru", n_layers=1, hidden=24, embed=8),
          "transformer": dict(model="transformer", n_layers=2, hidden=32, heads=4, context=16)}


@pytest.mark.parametrize("kind", sorted(FAMILY))
def test_byte_rows_are_drawn_last_so_both_vocabularies_start_alike(kind):
    torch.manual_seed(0)
    with_bytes = build_model(model_config(vocab_size=65 + 256, n_outputs=65, **FAMILY[kind]))
    torch.manual_seed(0)
    without = build_model(model_config(vocab_size=65, **FAMILY[kind]))
    a, b = with_bytes.state_dict(), without.state_dict()
    assert a.keys() == b.keys()
    for key in b:  # the embedding has 256 more rows (read, never predicted); everything else is equal
        assert torch.equal(a[key][: len(b[key])], b[key]), key
    assert param_count(with_bytes.config) == with_bytes.num_params()
    x = torch.randint(0, 65, (2, 12))
    logits, _, _ = with_bytes(x)
    assert logits.shape == (2, 12, 65)  # no output for a byte token
    torch.testing.assert_close(logits, without(x)[0])


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_run_with_byte_fallback_trains_exactly_as_one_without(corpus, tmp_path, kind):
    settings = dict(TINY, **FAMILY[kind], max_steps=30, log_interval=5)
    if kind == "transformer":  # its width is hidden, its windows its context
        del settings["embed"], settings["seq_len"]
    runs = {}
    for fallback in (True, False):
        out = tmp_path / str(fallback)
        summary = train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True,
                                   sample_len=0, byte_fallback=fallback), dict(settings))
        records = [json.loads(line) for line in (out / ck.METRICS).read_text().splitlines()]
        runs[fallback] = ([(r["step"], r["loss"]) for r in records if r["kind"] == "train"], summary["best_val"])
    (train_a, val_a), (train_b, val_b) = runs[True], runs[False]
    assert [s for s, _ in train_a] == [s for s, _ in train_b]
    np.testing.assert_allclose([v for _, v in train_a], [v for _, v in train_b], rtol=1e-5)
    assert val_a == pytest.approx(val_b, rel=1e-5)


def test_a_character_outside_the_vocabulary_costs_the_documented_finite_loss(trained_run):
    model, tok, _, _ = ck.load_run(trained_run)
    assert tok.byte_fallback and model.config.outputs == tok.n_chars < tok.vocab_size
    text = "KING:\nWhat caf\u00e9 is this?\n"
    ids = tok.encode(text, unknown="bytes")
    result = evaluate_model(model, ids, torch.device("cpu"), n_streams=1, per_char=True)
    byte_targets = np.flatnonzero(ids[1:] >= tok.n_chars)  # entry i scores token i + 1
    assert len(byte_targets) == 2  # é is two UTF-8 bytes
    rule = math.log(tok.n_chars) + math.log(256)
    assert unscored_loss(tok.n_chars) == rule
    np.testing.assert_allclose(result.losses[byte_targets], rule, rtol=1e-6)
    assert math.isfinite(result.loss_nats)
    # and a prime holding it is read: the sample that follows holds only the corpus's characters
    out = Sampler(model, tok).sample(prime="caf\u00e9 ", length=300, temperature=1.5, seed=3, unknown="bytes")
    assert out.startswith("caf\u00e9 ") and not tok.unknown_chars(out[len("caf\u00e9 "):])


def test_only_a_large_alphabet_leaves_its_rare_characters_to_bytes():
    counts = np.zeros(MAX_CODEPOINT, dtype=np.int64)
    counts[[ord(c) for c in "abc"]] = 1000
    counts[0x4E00:0x4E00 + MANY_CHARS] = 1  # a thousand CJK characters seen once each
    common = ["a", "b", "c"]
    assert data.vocabulary(counts) == common  # above MANY_CHARS distinct: the ones seen once are left out
    assert len(data.vocabulary(counts, byte_fallback=False)) == MANY_CHARS + 3  # no bytes to read them as
    counts[0x4E00 + 10:0x4E00 + MANY_CHARS] = 0  # 13 distinct: every one kept, even seen once ('$' in Shakespeare)
    assert len(data.vocabulary(counts)) == 13
    counts[0x4E00 + 10:0x4E00 + MANY_CHARS] = 1
    counts[0x4E00] = RARE_COUNT  # seen often enough to learn
    assert data.vocabulary(counts) == common + ["\u4e00"]


def test_a_run_on_a_large_alphabet_predicts_its_common_characters_and_reads_the_rest(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MANY_CHARS", 20)  # so that a small corpus has a "large" alphabet
    rare = [chr(0x391 + i) for i in range(24)]  # Greek capitals, each seen once
    text = corpus.read_text(encoding="utf-8")
    step = len(text) // (len(rare) + 1)
    path = tmp_path / "greek.txt"
    path.write_text("".join(text[i * step:(i + 1) * step] + c for i, c in enumerate(rare)) + text[len(rare) * step:],
                    encoding="utf-8")
    out = tmp_path / "run"
    summary = train(RunOptions(corpus=str(path), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0),
                    dict(TINY, max_steps=40, log_interval=5))
    model, tok, _, _ = ck.load_run(out)
    assert tok.unknown_chars("".join(rare)) == rare and not tok.unknown_chars(text)  # the play's own characters stay
    assert model.config.outputs == tok.n_chars
    # byte targets are left out of the training loss (cross_entropy would refuse a target beyond the outputs)
    records = [json.loads(line) for line in (out / ck.METRICS).read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert summary.get("skipped", 0) == 0 and math.isfinite(summary["best_val"])
    sample = Sampler(model, tok).sample(prime=rare[0], length=400, temperature=1.5, seed=1, unknown="bytes")
    assert not tok.unknown_chars(sample[1:])  # never emitted


def test_a_checkpoint_from_before_keeps_loading(trained_run, tmp_path):
    """An old checkpoint: no n_outputs in its config, an output layer over every token (bytes included)."""
    ckpt = ck.load_checkpoint(trained_run / ck.BEST)
    tok = ck.checkpoint_tokenizer(ck.Saved.from_dict(ckpt), trained_run / ck.BEST)
    mc = dict(ckpt["model_config"])
    assert mc.pop("n_outputs") == tok.n_chars
    weights = dict(ckpt["model"])
    pad = tok.vocab_size - tok.n_chars
    weights["head.weight"] = torch.cat([weights["head.weight"], torch.zeros(pad, mc["hidden"])])
    weights["head.bias"] = torch.cat([weights["head.bias"], torch.full((pad,), -30.0)])
    old = {**ckpt, "model_config": mc, "model": weights}
    torch.save(old, tmp_path / "old.pt")
    runner = CliRunner()
    info = runner.invoke(cli, ["info", str(tmp_path / "old.pt"), "--json"])
    assert info.exit_code == 0, info.output
    assert "n_outputs" not in json.loads(info.stdout)["model"]
    sample = runner.invoke(cli, ["sample", str(tmp_path / "old.pt"), "--length", "200", "--seed", "1",
                                 "--weights", "fp32"])
    assert sample.exit_code == 0 and not tok.unknown_chars(sample.stdout)
    new_model, old_model = ck.load_run(trained_run)[0], ck.load_run(tmp_path / "old.pt")[0]
    ids = np.asarray(tok.encode("KING:\nWhat is this, my lord?\n"))
    a = evaluate_model(new_model, ids, torch.device("cpu"), n_streams=1).loss_nats
    b = evaluate_model(old_model, ids, torch.device("cpu"), n_streams=1).loss_nats
    assert a == pytest.approx(b, abs=1e-6)  # the byte outputs hold ~e^-30 of the probability: the same loss


@pytest.mark.parametrize("n_outputs, message", [(0, "n_outputs"), (10_000, "n_outputs"), ("x", "n_outputs")])
def test_a_crafted_n_outputs_is_one_line(trained_run, tmp_path, n_outputs, message):
    ckpt = ck.load_checkpoint(trained_run / ck.BEST)
    torch.save({**ckpt, "model_config": {**ckpt["model_config"], "n_outputs": n_outputs}}, tmp_path / "x.pt")
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "x.pt")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]

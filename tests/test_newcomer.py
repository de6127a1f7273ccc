"""What a newcomer reaches for after the demo: fine-tuning a trained model on new text (`--init-from`),
repeating a run from its config.json (`--config`), and a run's loss curve (`info --plot`)."""

import json

import pytest
import torch
from click.testing import CliRunner

from charrnn import checkpoint as ck
from charrnn.cli import cli
from charrnn.tokenizer import CharTokenizer

TINY = ["--model", "lstm", "--layers", "1", "--hidden", "32", "--embed", "16", "--dropout", "0", "--batch-size", "4",
        "--seq-len", "16", "--lr", "0.01", "--warmup", "5", "--device", "cpu", "--precision", "fp32", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def other_text(tmp_path):
    """Text with characters the play lacks (digits, braces, an accent) and the play's own."""
    path = tmp_path / "other.txt"
    path.write_text("".join(f"item {i}: {{value}} café = {i * 7 % 13}\n" for i in range(600)), encoding="utf-8")
    return path


def test_fine_tuning_starts_from_the_runs_weights_and_grows_its_vocabulary(trained_run, other_text, tmp_path):
    out = tmp_path / "tuned"
    result = run("train", other_text, "--init-from", trained_run, "--out", out, "--max-steps", "3", "--device", "cpu",
                 "--precision", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    base, tuned = ck.load_run(trained_run), ck.load_run(out)
    base_tok, tok = base[1], tuned[1]
    new = sorted(set(tok.chars) - set(base_tok.chars))
    assert set(base_tok.chars) <= set(tok.chars) and "{" in new and "é" in new
    assert tuned[0].config.to_dict() | {"vocab_size": 0, "n_outputs": 0} == \
        base[0].config.to_dict() | {"vocab_size": 0, "n_outputs": 0}  # the run's own kind and shape
    assert json.loads((out / ck.CONFIG).read_text())["run"]["init_from"].endswith("best.pt")
    assert tuned[2].step == 3  # a fresh schedule: its own steps


def test_grown_rows_keep_each_character_s_weights(trained_run):
    from charrnn.families import build_model, family_of
    from charrnn.training import grow_vocabulary

    base, base_tok, _, _ = ck.load_run(trained_run)
    tok = CharTokenizer.from_chars(set(base_tok.chars) | set("{}0é"), byte_fallback=base_tok.byte_fallback)
    cfg = base.config.to_dict() | {"vocab_size": tok.vocab_size, "n_outputs": tok.n_chars}
    from charrnn.families import config_from_dict

    model = grow_vocabulary(family_of("lstm"), base, base_tok, build_model(config_from_dict(cfg)), tok)
    for c in base_tok.chars:  # every old character reads and is predicted exactly as before
        old, new = base_tok.chars.index(c), tok.chars.index(c)
        assert torch.equal(model.embed.weight[new], base.embed.weight[old])
        assert torch.equal(model.head.weight[new], base.head.weight[old])
    assert torch.equal(model.embed.weight[tok.n_chars:], base.embed.weight[base_tok.n_chars:])  # the byte rows
    ids = torch.tensor([[tok.chars.index(c) for c in "KING: the"]])
    old_ids = torch.tensor([[base_tok.chars.index(c) for c in "KING: the"]])
    old_logits = base(old_ids)[0][0, -1]
    new_logits = model(ids)[0][0, -1]
    kept = [tok.chars.index(c) for c in base_tok.chars]
    torch.testing.assert_close(new_logits[kept], old_logits)  # the same predictions among the old characters
    for c in "{}0é":
        assert new_logits[tok.chars.index(c)] <= old_logits.max()  # a new character starts unlikely


def test_fine_tuning_keeps_the_model_s_shape(trained_run, other_text, tmp_path):
    message = one_line_error(run("train", other_text, "--init-from", trained_run, "--hidden", "64", "--out",
                                 tmp_path / "t", "--max-steps", "2", "--quiet"))
    assert "--init-from keeps the model" in message and "--hidden" in message
    assert "not both" in one_line_error(run("train", other_text, "--init-from", trained_run, "--resume", "--out",
                                            trained_run, "--quiet"))


def test_config_repeats_a_run_and_what_is_given_wins(corpus, tmp_path):
    first = tmp_path / "a"
    assert run("train", corpus, "--out", first, *TINY, "--max-steps", "4", "--seed", "11").exit_code == 0
    again = tmp_path / "b"
    result = run("train", "--config", first / "config.json", "--out", again, "--quiet")  # the corpus it recorded
    assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, again))
    assert a["model"] == b["model"] and a["train"] == b["train"] and a["run"]["corpus_sha256"] == b["run"]["corpus_sha256"]
    wa, wb = (ck.load_checkpoint(d / ck.LAST)["model"] for d in (first, again))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same settings and seed: the same run
    third = run("train", "--config", first / "config.json", "--out", tmp_path / "c", "--max-steps", "2", "--quiet")
    assert third.exit_code == 0 and json.loads((tmp_path / "c" / "config.json").read_text())["train"]["max_steps"] == 2


def test_info_plot_draws_the_runs_losses(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    result = run("info", copy, "--plot")
    assert result.exit_code == 0 and "loss page" in result.stdout
    page = (copy / "loss.html").read_text()
    assert page.count("<svg") == 1 and page.count('class="series"') == 2 and "validation" in page

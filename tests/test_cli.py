import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner
from tokenizers import Tokenizer

from charrnn import checkpoint as ck
from charrnn.cli import cli

# Every setting a budget preset would choose is given, so these runs skip the speed measurement.
TINY_ARGS = ["--model", "gru", "--layers", "1", "--hidden", "32", "--embed", "16", "--dropout", "0", "--batch-size", "4",
             "--seq-len", "16", "--lr", "0.01", "--warmup", "5", "--max-steps", "20", "--precision", "fp32",
             "--device", "cpu", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, code=2):
    """Bad input: exit code 2, one line on stderr beginning 'Error:', no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def run_copy(trained_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def test_train_writes_a_self_sufficient_run_folder(corpus, tmp_path):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert {"tokenizer.json", "config.json", "last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["model"] == "gru" and config["train"]["max_steps"] == 20
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.decode(hf.encode("KING:\nthe").ids) == "KING:\nthe"
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["model_config"]["vocab_size"] == hf.get_vocab_size()
    assert ckpt["tokenizer"] and ckpt["trainer"]["progress"]["step"] == 20


def test_no_byte_fallback_keeps_only_the_corpus_characters(corpus, tmp_path):
    out = tmp_path / "run"
    assert run("train", corpus, "--out", out, "--no-byte-fallback", *TINY_ARGS).exit_code == 0
    chars = set(corpus.read_text(encoding="utf-8"))
    vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab()
    assert set(vocab) == chars  # no byte tokens (with them: 256 more)
    assert "'Z'" in one_line_error(run("sample", out, "--prime", "Zed", "--unknown", "bytes"))


def test_default_run_folder_and_sample_of_the_newest_run(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("train", corpus, *TINY_ARGS).exit_code == 0
    assert (tmp_path / "checkpoints" / "play-gru" / "best.pt").is_file()
    result = run("sample", "--length", "50", "--seed", "3", "--prime", "KING:")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("KING:") and len(result.stdout.rstrip("\n")) >= 50


def test_eval_info_and_inspect_default_to_the_newest_run_and_its_own_corpus(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("train", corpus, *TINY_ARGS).exit_code == 0
    named = json.loads(run("eval", "checkpoints/play-gru", corpus, "--json").stdout)
    assert json.loads(run("eval", "--json").stdout) == named  # the newest run, on the file it trained on
    assert json.loads(run("info", "--json").stdout)["step"] == json.loads(run("info", "checkpoints/play-gru", "--json").stdout)["step"]
    page = tmp_path / "p.html"
    inspected = run("inspect", "--chars", "300", "--out", page, "-q", "--json")
    assert inspected.exit_code == 0 and "the validation split of" in json.loads(inspected.stdout)["source"]
    corpus.rename(tmp_path / "moved.txt")  # no file there now, and no catalog corpus with its text
    assert "the run's corpus" in one_line_error(run("eval")) and "name a corpus" in one_line_error(run("eval"))
    assert json.loads(run("eval", "checkpoints/play-gru", tmp_path / "moved.txt", "--json").stdout) == named


def test_sample_options(trained_run):
    a = run("sample", trained_run, "--length", "80", "--seed", "1", "-t", "0.7", "--top-k", "5", "--top-p", "0.9")
    b = run("sample", trained_run, "--length", "80", "--seed", "1", "-t", "0.7", "--top-k", "5", "--top-p", "0.9")
    assert a.exit_code == 0 and a.stdout == b.stdout
    many = run("sample", trained_run, "--length", "20", "--num-samples", "3", "--seed", "2")
    assert many.stdout.count("--- sample") == 3
    streamed = run("sample", trained_run, "--length", "80", "--seed", "1", "--stream")
    plain = run("sample", trained_run, "--length", "80", "--seed", "1", "--no-stream")
    assert streamed.stdout == plain.stdout
    stopped = run("sample", trained_run, "--length", "300", "--seed", "1", "--stop", "\n", "--prime", "KING:")
    assert "\n" not in stopped.stdout.rstrip("\n")


def test_eval_json_and_text(trained_run, tmp_path):
    corpus = trained_run.parent.parent / "play.txt"
    data = json.loads(run("eval", trained_run, corpus, "--json").stdout)
    assert set(data) == {"loss_nats", "bpc", "perplexity", "chars"}
    assert data["chars"] == 20_000 - int(20_000 * 0.9) - 1  # every validation character after the first
    assert data["bpc"] == pytest.approx(data["loss_nats"] / 0.6931471805599453)
    whole = json.loads(run("eval", trained_run, corpus, "--json", "--split", "all").stdout)
    assert whole["chars"] == 19_999
    assert "bpc" in run("eval", trained_run, corpus).stdout


def test_info_and_corpus_list(trained_run):
    result = run("info", trained_run)
    assert result.exit_code == 0 and "parameters" in result.stdout and "best val loss" in result.stdout
    data = json.loads(run("info", trained_run, "--json").stdout)
    assert data["step"] == 60 and data["params"] > 0 and data["best_val_loss"] is not None
    assert "tinyshakespeare" in run("corpus", "list").stdout


def test_unset_settings_come_from_the_budget_preset(corpus, tmp_path):
    from charrnn import presets

    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, "--hidden", "32", "--max-steps", "3", "--device", "cpu",
                 "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "settings from the budget: preset" in result.stderr
    config = json.loads((out / "config.json").read_text())
    chosen = config["run"]["preset"]
    assert chosen["budget_s"] == 600 and chosen["chars_per_s"] > 0
    preset = next(p for p in presets.presets_for("lstm") if p.name == chosen["preset"])
    assert chosen["chars"] >= preset.min_chars  # it could afford the preset it picked...
    assert config["model"]["hidden"] == 32  # ...with what the user set on top
    assert config["model"]["n_layers"] == preset.settings["n_layers"] and config["train"]["lr"] == preset.settings["lr"]
    # the dropout from the epochs the budget buys on this corpus's training split
    assert chosen["epochs"] == pytest.approx(chosen["chars"] / config["run"]["train_chars"], rel=0.01)
    epochs = chosen["chars"] / config["run"]["train_chars"]
    assert config["model"]["dropout"] == min(presets.dropout_for(epochs), presets.MAX_DROPOUT_WITH_WEIGHT_DROP)
    assert config["model"].get("weight_drop", 0.0) == presets.weight_drop_for(epochs)


def test_bom_notice(tmp_path):
    path = tmp_path / "bom.txt"
    from conftest import make_text

    path.write_bytes(b"\xef\xbb\xbf" + make_text(5000).encode())
    args = [a for a in TINY_ARGS if a != "--quiet"]
    result = run("train", path, "--out", tmp_path / "run", *args)
    assert result.exit_code == 0 and "byte-order mark" in result.stderr


# --- bad input: one line, exit 2, nothing damaged ---------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("caf\xe9 au lait".encode("latin-1"), "not UTF-8"),
    (b"too small", "validation split too small"),
    (b"abcdefghij" * 6, "corpus too small"),  # 54 training characters: less than 4 streams x 16
])
def test_bad_corpus(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    assert message in one_line_error(run("train", path, "--out", tmp_path / "run", *TINY_ARGS))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_directory_as_corpus(tmp_path):
    assert "directory" in one_line_error(run("train", tmp_path, "--out", tmp_path / "run", *TINY_ARGS))


@pytest.mark.parametrize("args", [
    ["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "0"], ["--length", "-5"],
])
def test_nonsense_sample_options(run_copy, args):
    one_line_error(run("sample", run_copy, *args))


@pytest.mark.parametrize("args", [["--seq-len", "0"], ["--batch-size", "-1"], ["--max-time", "soon"],
                                  ["--dropout", "1.5"], ["--val-frac", "1"], ["--lr", "0"], ["--weight-drop", "1"]])
def test_nonsense_train_options(corpus, tmp_path, args):
    one_line_error(run("train", corpus, "--out", tmp_path / "run", *args))


def test_unknown_prime_characters_are_named(run_copy):
    assert "'Z'" in one_line_error(run("sample", run_copy, "--prime", "Zed"))
    assert run("sample", run_copy, "--prime", "Zed", "--unknown", "bytes", "--length", "5").exit_code == 0


def test_missing_run(tmp_path, monkeypatch):
    assert "no such run" in one_line_error(run("sample", tmp_path / "nope"))
    assert "holds no checkpoint" in one_line_error(run("sample", tmp_path))
    monkeypatch.chdir(tmp_path)
    assert "no runs under" in one_line_error(run("sample"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_charrnn"])
def test_corrupt_checkpoint(run_copy, damage):
    path = run_copy / "best.pt"
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    else:
        torch.save({"hello": torch.zeros(2)}, path)
    before = digest(run_copy)
    for cmd in (["sample", path], ["info", path], ["eval", path, run_copy.parent.parent / "nothing.txt"]):
        assert "checkpoint" in one_line_error(run(*cmd))
    assert digest(run_copy) == before


def test_checkpoint_with_code_in_it_is_refused_without_running_it(run_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run_copy / "best.pt", "wb") as f:
        pickle.dump({"format": "charrnn-checkpoint/1", "x": Evil()}, f)
    one_line_error(run("sample", run_copy / "best.pt"))
    assert not marker.exists()


def test_tokenizer_that_does_not_match_the_weights(run_copy):
    from charrnn.tokenizer import CharTokenizer

    CharTokenizer.from_chars("abc").save(run_copy / "tokenizer.json")
    before = digest(run_copy)
    assert "does not match" in one_line_error(run("sample", run_copy))
    assert digest(run_copy) == before


def test_existing_run_is_never_overwritten(run_copy, tmp_path):
    from conftest import make_text

    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(20_000))  # the same text the run was trained on
    before = digest(run_copy)
    assert "already holds a run" in one_line_error(run("train", corpus, "--out", run_copy, *TINY_ARGS))
    other = tmp_path / "other.txt"
    other.write_text(make_text(20_000, seed=1))
    assert "not the corpus" in one_line_error(run("train", other, "--out", run_copy, "--resume", "--quiet"))
    assert digest(run_copy) == before


def test_compile_that_cannot_build_is_one_line_error(corpus, tmp_path, monkeypatch):
    def broken_compile(module, **kwargs):  # as torch.compile behaves on a machine without a C++ compiler
        def call(*args, **kw):
            raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("Compiler: cc is not found"), None)
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    message = one_line_error(run("train", corpus, "--out", tmp_path / "run", "--compile", *TINY_ARGS))
    assert "--compile failed (RuntimeError: Compiler: cc is not found)" in message
    assert not (tmp_path / "run" / ck.LAST).exists()


def test_precision_the_cpu_cannot_run_is_refused(corpus, tmp_path, monkeypatch):
    from charrnn import device

    args = [a for a in TINY_ARGS if a not in ("--precision", "fp32")]
    assert "needs a GPU" in one_line_error(run("train", corpus, "--out", tmp_path / "a", *args, "--precision", "fp16"))
    if device.cpu_supports_bf16():  # the branch of a CPU with native bf16 runs only on one
        bf16 = run("train", corpus, "--out", tmp_path / "b", *args, "--precision", "bf16")
        assert bf16.exit_code == 0, bf16.output
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)  # the other branch, forced on any CPU
    assert "no native bf16" in one_line_error(run("train", corpus, "--out", tmp_path / "c", *args, "--precision", "bf16"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()

"""Hostile input, round two (issue 25): links planted in a run folder, damaged id caches, deeply nested
JSON, hostile names and arguments, broken plug-ins, no home folder, signals, and the Python API's own
checks. Each test names the finding it holds to; the round-one helpers are test_hostile's."""

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import torch
from conftest import make_text
from test_hostile import SMALL, _start_training, _wait_for, cli_env, digest, fp32_run, one_line_error, run, small  # noqa: F401  (fixtures)

from charrnn import Sampler, evaluate, families, memory, presets
from charrnn import checkpoint as ck
from charrnn import compare as compare_module
from charrnn.errors import BadType, BadValue, CharrnnError
from charrnn.families import build_model, evaluate_model, model_config
from charrnn.fileio import append_line, atomic_write, shown
from charrnn.sampler import SampleConfig
from charrnn.training import RunOptions, train

NESTED = b"[" * 100_000 + b"]" * 100_000  # deeper than any parser's stack


def resume(out, corpus, steps=25):
    return run("train", corpus, "--out", out, "--resume", "--max-steps", steps, "--quiet")


@pytest.fixture
def run_copy(trained_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(trained_run, dst)
    return dst


# --- 1. the lock file ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["link", "dangling link", "link on resume"])
def test_a_lock_link_never_makes_training_write_outside_the_run_folder(small, tmp_path, request, case):
    victim = tmp_path / "victim"
    if case != "dangling link":
        victim.write_text("precious data\n")
    out = request.getfixturevalue("fp32_run") if case == "link on resume" else tmp_path / "R"
    out.mkdir(exist_ok=True)
    os.symlink(victim, out / ck.LOCK)
    result = resume(out, small) if case == "link on resume" else run("train", small, "--out", out, *SMALL,
                                                                       "--max-steps", "3")
    assert "symbolic link" in one_line_error(result)
    assert (out / ck.LOCK).is_symlink()
    if case == "dangling link":
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious data\n"


def test_a_users_own_lock_file_is_neither_overwritten_nor_removed(small, tmp_path):
    out = tmp_path / "R"
    out.mkdir()
    (out / ck.LOCK).write_text("my notes\n")
    assert "not a charrnn lock file" in one_line_error(run("train", small, "--out", out, *SMALL, "--max-steps", "3"))
    assert (out / ck.LOCK).read_text() == "my notes\n"
    (out / ck.LOCK).write_text("12345\n")  # the lock a killed run left: taken over, and removed at the end
    assert run("train", small, "--out", out, *SMALL, "--max-steps", "3").exit_code == 0
    assert not (out / ck.LOCK).exists()


def test_a_cache_link_is_refused_by_every_command_that_would_write_through_it(small, run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fresh = tmp_path / "R"
    fresh.mkdir()
    os.symlink(elsewhere, fresh / ck.CACHE)
    assert "symbolic link" in one_line_error(run("train", small, "--out", fresh, *SMALL, "--max-steps", "3"))
    shutil.rmtree(run_copy / ck.CACHE)
    os.symlink(elsewhere, run_copy / ck.CACHE)
    assert "symbolic link" in one_line_error(run("eval", run_copy, small))
    assert not any(elsewhere.iterdir())


def test_a_file_written_atomically_replaces_a_link_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious data\n")
    os.symlink(victim, tmp_path / "inspect.html")
    atomic_write(tmp_path / "inspect.html", lambda f: f.write(b"page"))
    assert victim.read_text() == "precious data\n"
    assert not (tmp_path / "inspect.html").is_symlink() and (tmp_path / "inspect.html").read_text() == "page"


# --- 2. temporary files ------------------------------------------------------------------------------------
def test_a_new_run_removes_only_the_temporary_files_charrnn_wrote(small, tmp_path):
    out = tmp_path / "R"
    (out / ck.CACHE).mkdir(parents=True)
    users = [out / ".draft.tmp", out / ck.CACHE / ".keep.tmp", out / ".notes.txt.abc123.tmp"]
    killed_writers = [out / ".last.pt.ab12cd_9.tmp", out / ck.CACHE / f".{'0' * 16}-{'a' * 12}-bytes.uint16.zz9x1q.tmp"]
    for p in users + killed_writers:
        p.write_bytes(b"x")
    assert run("train", small, "--out", out, *SMALL, "--max-steps", "3").exit_code == 0
    assert all(p.read_bytes() == b"x" for p in users)
    assert not any(p.exists() for p in killed_writers)


# --- 3. metrics.jsonl ----------------------------------------------------------------------------------------
def test_a_metrics_link_is_never_followed(small, fp32_run, tmp_path):
    outside = tmp_path / "outside.jsonl"
    fresh = tmp_path / "R"
    fresh.mkdir()
    os.symlink(outside, fresh / ck.METRICS)  # dangling: a fresh run would create it
    assert "symbolic link" in one_line_error(run("train", small, "--out", fresh, *SMALL, "--max-steps", "3"))
    assert not outside.exists()

    mine = tmp_path / "mine.jsonl"
    mine.write_text("my own records\n")
    (fp32_run / ck.METRICS).unlink()
    os.symlink(mine, fp32_run / ck.METRICS)
    before = digest(fp32_run)
    assert "symbolic link" in one_line_error(resume(fp32_run, small))
    assert mine.read_text() == "my own records\n" and digest(fp32_run) == before
    with pytest.raises(CharrnnError, match="symbolic link"):  # a link planted after the folder was checked
        append_line(fp32_run / ck.METRICS, "{}")
    assert mine.read_text() == "my own records\n"


# --- 4. the id cache -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["random ids", "one byte short", "empty"])
def test_a_damaged_id_cache_is_encoded_again(fp32_run, small, damage):
    [cache] = list((fp32_run / ck.CACHE).iterdir())
    good = cache.read_bytes()
    expected = json.loads(run("eval", fp32_run, small, "--json").stdout)
    damaged = {"random ids": np.random.default_rng(0).integers(0, 256, len(good), dtype=np.uint8).tobytes(),
               "one byte short": good[:-1], "empty": b""}[damage]
    cache.write_bytes(damaged)
    result = run("eval", fp32_run, small, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected and cache.read_bytes() == good
    cache.write_bytes(damaged)
    result = resume(fp32_run, small, steps=22)
    assert result.exit_code == 0, result.output
    assert cache.read_bytes() == good


def test_eval_of_an_empty_corpus_leaves_nothing_in_the_cache(run_copy, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    before = sorted(p.name for p in (run_copy / ck.CACHE).iterdir())
    assert "is empty" in one_line_error(run("eval", run_copy, empty))
    assert sorted(p.name for p in (run_copy / ck.CACHE).iterdir()) == before


# --- 5. deeply nested JSON ---------------------------------------------------------------------------------------
def test_deeply_nested_json_is_a_foreign_line_or_a_damaged_file(fp32_run, small, tmp_path):
    with open(fp32_run / ck.METRICS, "ab") as f:
        f.write(NESTED + b"\n")
    result = resume(fp32_run, small)
    assert result.exit_code == 0, result.output
    assert NESTED not in (fp32_run / ck.METRICS).read_bytes()

    out = tmp_path / "R"
    out.mkdir()
    (out / ck.CONFIG).write_bytes(NESTED)
    assert "config.json" in one_line_error(run("train", small, "--out", out, *SMALL, "--max-steps", "3"))
    assert (out / ck.CONFIG).read_bytes() == NESTED

    report = tmp_path / "C"
    report.mkdir()
    (report / compare_module.PROGRESS).write_bytes(NESTED)
    assert "is damaged" in one_line_error(run("compare", small, "--models", "lstm", "--max-time", "1s", "--out", report,
                                              "--device", "cpu", "--quiet"))
    assert (report / compare_module.PROGRESS).read_bytes() == NESTED


# --- 6. arguments that are not UTF-8 ---------------------------------------------------------------------------
def test_bytes_that_are_not_utf8_in_inspect_and_compare_arguments(trained_run, tmp_path, monkeypatch):
    assert "not valid UTF-8" in one_line_error(run("inspect", trained_run, "--text", os.fsdecode(b"ab\xffcd"), "-q"))
    copy = tmp_path / os.fsdecode(b"run\xff")
    shutil.copytree(trained_run, copy)
    page = tmp_path / os.fsdecode(b"page\xff.html")
    result = run("inspect", copy, "--out", page, "--chars", "300", "--show", "100", "--positions", "4", "-q")
    assert result.exit_code == 0, result.output
    assert page.is_file() and "page\\xff.html" in result.stdout and "run\\xff" in page.read_text()

    def stop(opts, overrides):  # the settings are written before the first model trains: stop there
        raise CharrnnError("stopped before training")

    monkeypatch.setattr(compare_module, "train_one", stop)
    corpus = tmp_path / os.fsdecode(b"c\xff.txt")
    corpus.write_text(make_text(5_000), encoding="utf-8")
    play = trained_run.parent.parent / "play.txt"
    for text, out in ((corpus, tmp_path / "C"), (play, tmp_path / os.fsdecode(b"C\xff"))):
        assert "stopped before training" in one_line_error(run("compare", text, "--models", "lstm", "--max-time", "1s",
                                                               "--out", out, "--device", "cpu", "--quiet"))
        assert not out.exists()  # nothing trained: nothing kept


def test_a_compare_out_that_is_not_utf8_records_its_runs(corpus, tmp_path, monkeypatch):
    def stop(*args):  # what is tested ends with the training: its record in compare.json
        raise CharrnnError("stopped before measuring")

    monkeypatch.setattr(compare_module, "train_one", lambda opts, overrides: train(opts, overrides))  # in-process
    monkeypatch.setattr(compare_module, "measure", stop)
    out = tmp_path / os.fsdecode(b"C\xff")
    cfg = compare_module.CompareConfig(str(corpus), models=("lstm",), max_time=60, out=out, device="cpu",
                                       precision="fp32", quiet=True, extra=dict(n_layers=1, hidden=16, embed=8,
                                                                                batch_size=4, seq_len=16, max_steps=5))
    with pytest.raises(CharrnnError, match="stopped before measuring"):
        compare_module.compare(cfg)
    state = json.loads((out / compare_module.PROGRESS).read_text(encoding="utf-8"))
    assert state["trained"]["lstm"]["run_dir"].endswith("C\\xff/runs/lstm")


def test_the_same_line_for_a_prime_that_is_not_utf8_from_the_cli_and_the_api(trained_run):
    line = one_line_error(run("sample", trained_run, "--prime", os.fsdecode(b"KING\xff")))
    with pytest.raises(BadValue) as e:
        Sampler.load(trained_run).sample(prime=os.fsdecode(b"KING\xff"))
    assert line == f"Error: {e.value}" and "\\xff" in line


# --- 7. a plug-in that cannot be imported ---------------------------------------------------------------------
def test_a_plugin_that_cannot_be_imported_is_one_line_in_every_command(trained_run, small, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_FAMILIES", "no_such_mod")
    monkeypatch.setattr(families, "_plugins_loaded", False)  # (restored afterwards)
    monkeypatch.setattr(families, "_failed", None, raising=False)
    for args in (["models"], ["sample", trained_run], ["info", trained_run],
                 ["train", small, "--out", tmp_path / "r", "--max-steps", "2", "--quiet"],
                 ["compare", small, "--out", tmp_path / "c", "--quiet"]):
        assert "CHARRNN_FAMILIES names no_such_mod, which cannot be imported" in one_line_error(run(*args))
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()
    assert run("--help").exit_code == 0


# --- 8. no home folder ---------------------------------------------------------------------------------------------
def test_no_home_folder_and_no_passwd_entry_is_no_crash(shared_corpus, tmp_path, monkeypatch):
    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    real_access = os.access
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # a container run with --user 12345
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK else real_access(p, mode, **kw))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    listed = run("corpus", "list")
    folder = tmp_path / f"charrnn-{os.getuid()}" / "corpora"
    assert listed.exit_code == 0 and f"downloaded on first use to {folder}" in listed.stdout
    folder.mkdir(parents=True)
    os.symlink(shared_corpus, folder / "tinyshakespeare.txt")  # as if downloaded there before
    result = run("train", "tinyshakespeare", "--out", tmp_path / "run", *SMALL, "--max-steps", "2",
                 "--val-frac", "0.01")
    assert result.exit_code == 0, result.output


# --- 9. file names in messages ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["no\nsuch.txt", "x\x1b[31my", "a\u202eb\u2028c"])
def test_a_crafted_file_name_never_breaks_the_one_line_rule(tmp_path, name):
    path = tmp_path / name
    for args in (["train", path, "--out", tmp_path / "r", *SMALL], ["sample", path], ["info", path],
                 ["eval", path, path], ["inspect", path]):
        line = one_line_error(run(*args))
        assert line.isprintable(), line
    assert shown(tmp_path / "a\nb") == f"'{tmp_path}/a\\nb'"
    assert shown(tmp_path / "plain.txt") == f"{tmp_path}/plain.txt"
    assert shown(os.fsdecode(b"caf\xff's")) == "'caf\\xff\\'s'"


# --- 10. Ctrl-C early in compare ---------------------------------------------------------------------------------
def test_ctrl_c_early_in_compare_exits_130_and_the_same_command_can_continue(small, tmp_path):
    out = tmp_path / "C"
    cmd = [sys.executable, "-m", "charrnn", "compare", str(small), "--models", "lstm,gru", "--max-time", "10m",
           "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    # as a terminal does: SIGINT to the whole process group, while the training child is still starting
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
                            start_new_session=True)
    watchdog = threading.Timer(300, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "[1/2] training lstm" in line:
                break
        assert proc.poll() is None, "".join(seen)
        threading.Event().wait(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait() == 130, err
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in err and "Error" not in err and "run the same command again" in err
    state = json.loads((out / compare_module.PROGRESS).read_text())
    assert state["settings"]["models"] == ["lstm", "gru"] and state["trained"] == {}
    ck.load_checkpoint(out / "runs" / "lstm" / ck.LAST)  # what the rerun continues


# --- 11. a checkpoint from another run ----------------------------------------------------------------------------
def test_a_foreign_best_checkpoint_is_refused_before_training(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(100_000), encoding="utf-8")  # its validation split outgrows the subset
    settings = dict(model="lstm", n_layers=1, hidden=32, embed=16, dropout=0.0, batch_size=4, seq_len=16, lr=1e-2,
                    warmup_steps=5, max_steps=20, eval_interval=5)
    opts = dict(corpus=str(corpus), precision="fp32", device="cpu", quiet=True, sample_len=0)
    stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 7 else None)  # noqa: E731
    # interrupted after its best checkpoint (step 5) was judged on the subset: a resume scores it in full
    assert train(RunOptions(out=tmp_path / "a", **opts), settings, on_trainer=stop)["reason"] == "interrupted"
    train(RunOptions(out=tmp_path / "b", **opts), {**settings, "hidden": 48, "max_steps": 5})
    shutil.copy(tmp_path / "b" / ck.BEST, tmp_path / "a" / ck.BEST)
    before = digest(tmp_path / "a")
    message = one_line_error(resume(tmp_path / "a", corpus, steps=10))
    assert "best.pt is not from the run" in message and "model" in message
    assert digest(tmp_path / "a") == before


# --- also expected: signals, wide outputs, the Python API, long primes, compare --params ----------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_and_exit_as_ctrl_c_does(small, tmp_path, sig):
    out = tmp_path / "run"
    proc = _start_training(small, out, "--max-steps", "100000")
    try:
        _wait_for(out / ck.LAST, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    assert ck.load_checkpoint(out / ck.LAST)["trainer"]["progress"]["step"] > 0 and not (out / ck.LOCK).exists()


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_wide_output_layer_is_evaluated_in_smaller_passes_with_the_same_loss(kind, monkeypatch):
    torch.manual_seed(0)
    extra = dict(heads=2, context=32) if kind == "transformer" else dict(embed=8)
    model = build_model(model_config(vocab_size=500, model=kind, n_layers=1, hidden=16, dropout=0.0, **extra)).eval()
    ids = np.random.default_rng(0).integers(0, 500, 3_000)
    cpu = torch.device("cpu")
    whole = evaluate_model(model, ids, cpu, n_streams=4, seq_len=64)
    sizes = []
    real_forward = type(model).forward

    def counted(self, idx, *args, **kw):
        sizes.append(idx.numel() * 500)  # the logits this pass produces
        return real_forward(self, idx, *args, **kw)

    monkeypatch.setattr(type(model), "forward", counted)
    monkeypatch.setattr(evaluate, "EVAL_LOGITS", 4 * 500 * 20)
    part = evaluate_model(model, ids, cpu, n_streams=4, seq_len=64)
    assert part.chars == whole.chars and part.loss_nats == pytest.approx(whole.loss_nats, rel=1e-5)
    assert max(sizes) <= evaluate.EVAL_LOGITS


def test_the_memory_estimate_counts_the_evaluation_of_a_wide_output_layer():
    wide = model_config(vocab_size=100_000, model="lstm", n_layers=1, hidden=32, embed=16)
    assert memory.eval_shape(wide)[0] * memory.eval_shape(wide)[1] * wide.outputs <= evaluate.EVAL_LOGITS
    assert memory.training_need(wide, 4, 16).activations < 1 << 30  # not 32 x 256 x 100,000 logits (10 GB)


@pytest.mark.parametrize("kw, error, text", [
    (dict(top_k=1.5), BadType, "top-k must be a whole number, not 1.5"),
    (dict(length=True), BadType, "length must be a whole number, not True"),
    (dict(length=-1), BadValue, "length must be >= 0, not -1"),
    (dict(temperature=float("nan")), BadValue, "temperature must be a finite number >= 0"),
    (dict(unknown="zzz"), BadValue, "unknown must be one of 'error', 'bytes', not 'zzz'"),
    (dict(prime="KING\udcff"), BadValue, "not valid UTF-8"),
    (dict(prime="KING\ud800"), BadValue, "not valid UTF-8"),
    (dict(prime=5), BadType, "prime must be text"),
    (dict(stop=[1]), BadType, "stop must be a string or a list of strings"),
    (dict(seed=-1), BadValue, "seed must be in"),
])
def test_the_python_api_refuses_nonsense_in_one_line(trained_run, kw, error, text):
    s = Sampler.load(trained_run, weights="fp32")
    for call in (s.sample, lambda **k: list(s.stream(**k)), lambda **k: s.sample_many(SampleConfig(**k), 1)):
        with pytest.raises(error, match=re.escape(text)) as e:
            call(**{"length": 5, **kw})
        assert isinstance(e.value, CharrnnError) and len(str(e.value).splitlines()) == 1
    assert issubclass(BadType, TypeError) and issubclass(BadValue, ValueError)


def test_none_means_no_prime_and_no_stop_strings(trained_run):
    s = Sampler.load(trained_run, weights="fp32")
    assert s.sample(prime=None, stop=None, length=20, seed=1) == s.sample(length=20, seed=1)
    assert "".join(s.stream(prime=None, stop=None, length=20, seed=1)) == s.sample(length=20, seed=1)


def test_a_long_prime_is_read_in_chunks_with_the_state_carried(trained_run, monkeypatch):
    s = Sampler.load(trained_run, weights="fp32")
    prime = torch.as_tensor(s.tok.encode(make_text(3_000, seed=5)), dtype=torch.long).unsqueeze(0)
    family = families.family_of(s.model.config.model)
    with torch.inference_mode():
        whole, _ = family.read_prime(s.model, prime, s.model.prefill, s.model.step)
        monkeypatch.setattr(families.base, "PRIME_CHUNK", 256)
        lengths = []
        real_forward = type(s.model).forward
        monkeypatch.setattr(type(s.model), "forward", lambda self, idx, *a, **k: (lengths.append(idx.size(1)),
                                                                                   real_forward(self, idx, *a, **k))[1])
        chunked, _ = family.read_prime(s.model, prime, s.model.prefill, s.model.step)
    assert lengths and max(lengths) <= 256 and sum(lengths) == prime.size(1) - 1
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert len(s.sample(prime=make_text(3_000, seed=5), length=10)) == 3_010
    # and sized so: a 10 MB prime needs the memory of one chunk (and its ids), not of 10M positions at once
    assert memory.sampling_need(s.model.config, 1, 10_000_000).activations < 200 << 20


def test_compare_params_beyond_memory_names_compares_own_flag_and_leaves_nothing(small, tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "measure_speed", lambda *args, **kw: 1e9)  # no timing: the check comes after
    out = tmp_path / "C"
    message = one_line_error(run("compare", small, "--models", "lstm", "--params", "999G", "--max-time", "1s",
                                 "--out", out, "--device", "cpu", "--quiet"))
    assert "of memory" in message and "lower --params" in message
    assert not re.search(r"--(hidden|layers|embed|context|batch-size|seq-len|grad-accum)", message)
    assert not out.exists()


def test_inspect_of_empty_text_says_so(trained_run):
    assert "the text given holds 0 character(s)" in one_line_error(run("inspect", trained_run, "--text", ""))


def test_a_checkpoint_whose_preset_is_not_plain_json_is_damaged(run_copy, trained_run):
    ckpt = torch.load(run_copy / ck.LAST, weights_only=True)
    ckpt["run"]["preset"] = {"speed": torch.zeros(1)}  # config.json, which copies it, could not be written
    torch.save(ckpt, run_copy / ck.LAST)
    assert "run.preset is not a table of plain values" in one_line_error(
        resume(run_copy, trained_run.parent.parent / "play.txt", steps=61))

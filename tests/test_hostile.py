"""Hostile input, one finding of issue 9 after another: every bad input is one line on stderr with the
right exit code, never a traceback or a hang, and nothing a user had is damaged.

Where behaviour depends on the machine (bf16, free memory), the probe is forced, so each branch is
tested on any CPU."""

import copy
import hashlib
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_text

from charrnn import Sampler, device, families, memory
from charrnn import checkpoint as ck
from charrnn.cli import cli
from charrnn.errors import CharrnnError, one_line
from charrnn.evaluate import EvalResult
from charrnn.fileio import to_json

ROOT = Path(__file__).resolve().parents[1]
# a tiny LSTM whose every setting is given (no preset timing); `--precision` is left to each test
SMALL = ["--model", "lstm", "--layers", "1", "--hidden", "32", "--embed", "16", "--dropout", "0", "--batch-size", "4",
         "--seq-len", "16", "--lr", "0.01", "--warmup", "5", "--device", "cpu", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, code=2):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def within(seconds, *args):
    """`run(*args)` in a thread that must finish in time: a command that blocks fails, not hangs."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"charrnn {' '.join(map(str, args))} did not finish in {seconds}s"
    return box["r"]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def strict_json_lines(path):
    """Every line parses as strict JSON: NaN and Infinity are refused."""
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return [json.loads(line, parse_constant=no_constants) for line in path.read_text(encoding="utf-8").splitlines()]


def cli_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


@pytest.fixture
def fp32_run(small, tmp_path):
    """A run trained in fp32 for 20 steps, checkpointed every 5."""
    out = tmp_path / "run"
    result = run("train", small, "--out", out, *SMALL, "--precision", "fp32", "--max-steps", "20",
                 "--eval-interval", "5")
    assert result.exit_code == 0, result.output
    return out


# --- 1. resume keeps the run's settings ---------------------------------------------------------------
def test_resume_keeps_the_runs_precision_even_where_auto_would_pick_bf16(fp32_run, small, monkeypatch):
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)  # auto would now mean bf16
    result = run("train", small, "--out", fp32_run, "--resume", "--max-steps", "25", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((fp32_run / ck.CONFIG).read_text())["precision"] == "fp32"
    assert ck.load_checkpoint(fp32_run / ck.LAST)["run"]["precision"] == "fp32"


@pytest.mark.parametrize("args, message", [
    (["--precision", "bf16"], "its --precision is fp32, not bf16"),
    (["--val-frac", "0.5"], "its --val-frac is 0.1, not 0.5"),
    (["--no-byte-fallback"], "its --byte-fallback is True, not False"),
    (["--lr", "0.02"], "its --lr is 0.01, not 0.02"),
    (["--layers", "2"], "its --layers is 1, not 2"),
])
def test_a_setting_given_on_resume_must_match_the_run(fp32_run, small, monkeypatch, args, message):
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)  # so that bf16 itself is not the problem
    before = digest(fp32_run)
    assert message in one_line_error(run("train", small, "--out", fp32_run, "--resume", *args, "--quiet"))
    assert digest(fp32_run) == before


def test_the_same_settings_given_again_on_resume_are_fine(fp32_run, small):
    result = run("train", small, "--out", fp32_run, "--resume", "--val-frac", "0.1", "--byte-fallback",
                 "--precision", "fp32", "--lr", "0.01", "--max-steps", "22", "--quiet")
    assert result.exit_code == 0, result.output


# --- 2, 3. divergence and non-finite values ---------------------------------------------------------
def test_a_diverging_run_stops_with_one_line_and_keeps_only_finite_checkpoints(small, tmp_path):
    out = tmp_path / "run"
    args = ["train", small, "--out", out, *SMALL, "--precision", "fp32", "--lr", "1000", "--grad-clip", "0",
            "--max-steps", "300", "--eval-interval", "5"]
    assert "training diverged" in one_line_error(run(*args), code=3)  # at lr 1000 no run survives
    for name in (ck.LAST, ck.BEST):
        if (out / name).exists():  # loading checks every weight is finite
            ck.load_checkpoint(out / name)
    records = strict_json_lines(out / ck.METRICS)
    assert records and all(isinstance(r["step"], int) for r in records)
    if (out / ck.LAST).exists():  # its resume diverges the same way, also in one line
        again = run("train", small, "--out", out, "--resume", "--max-steps", "400", "--quiet")
        assert "training diverged" in one_line_error(again, code=3)


def test_a_huge_validation_loss_has_an_infinite_perplexity_and_json_says_null():
    r = EvalResult(800.0, 10)
    assert r.perplexity == float("inf")
    assert r.to_dict()["perplexity"] is None and r.to_dict()["loss_nats"] == 800.0
    assert EvalResult(float("nan"), 10).to_dict()["loss_nats"] is None


@pytest.mark.parametrize("args", [["--lr", "inf"], ["--lr", "nan"], ["--lr", "1e308"], ["--weight-decay", "nan"],
                                  ["--weight-decay", "inf"], ["--grad-clip", "nan"], ["--dropout", "nan"], ["--weight-drop", "nan"],
                                  ["--max-epochs", "inf"], ["--val-frac", "nan"]])
def test_non_finite_or_absurd_training_values_are_refused(small, tmp_path, args):
    one_line_error(run("train", small, "--out", tmp_path / "run", *SMALL, "--max-steps", "5", *args))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["-t", "inf"], ["-t", "nan"], ["--top-p", "nan"]])
def test_non_finite_sampling_values_are_refused(trained_run, args):
    one_line_error(run("sample", trained_run, *args))


# --- 4. sampling -------------------------------------------------------------------------------------
def test_a_checkpoint_with_nan_weights_is_refused_everywhere(trained_run, tmp_path):
    ckpt = torch.load(trained_run / ck.BEST, weights_only=True)
    ckpt["model"]["head.bias"][3] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    corpus = trained_run.parent.parent / "play.txt"
    for args in (["sample", tmp_path / "nan.pt"], ["sample", tmp_path / "nan.pt", "--weights", "fp32"],
                 ["info", tmp_path / "nan.pt"], ["eval", tmp_path / "nan.pt", corpus]):
        assert "NaN or infinite" in one_line_error(run(*args))


def test_a_nan_model_cannot_make_a_sampler(trained_run):
    model, tok, _, _ = ck.load_run(trained_run)
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    with pytest.raises(CharrnnError, match="NaN or infinite"):
        Sampler(model, tok)


def test_a_tiny_temperature_is_greedy(trained_run):
    greedy = run("sample", trained_run, "--prime", "KING:", "--length", "60", "-t", "0", "--weights", "fp32")
    tiny = run("sample", trained_run, "--prime", "KING:", "--length", "60", "-t", "1e-40", "--weights", "fp32",
               "--seed", "1")
    assert tiny.exit_code == 0 and tiny.stdout == greedy.stdout
    assert tiny.stdout[5:-1] != "\n" * 60  # not the run of newlines NaN probabilities gave (argmax of NaN: id 0)


# --- 5, 10. files that cannot be written or read ---------------------------------------------------------
def _limited(limit):
    """Run a child whose files may grow to `limit` bytes: a bigger write fails with EFBIG, as a full disk
    fails with ENOSPC (Python ignores SIGXFSZ, so the write returns the error)."""
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _cli(*args, limit=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout, preexec_fn=None if limit is None else _limited(limit))


def _assert_one_line(proc, code=2):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_old_one_survives(fp32_run, small):
    before = digest(fp32_run)
    size = (fp32_run / ck.LAST).stat().st_size
    proc = _cli("train", small, "--out", fp32_run, "--resume", "--max-steps", "30", "--quiet", limit=size // 2)
    assert "cannot write" in _assert_one_line(proc) and "last.pt" in proc.stderr
    assert digest(fp32_run)[ck.LAST] == before[ck.LAST]  # the old last.pt, whole
    assert not list(fp32_run.glob(".*.tmp")) and ck.load_checkpoint(fp32_run / ck.LAST)


@pytest.mark.slow
def test_a_full_disk_while_caching_the_corpus_is_one_line_and_leaves_nothing(tmp_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text(make_text(200_000), encoding="utf-8")  # its id cache: 400 kB
    out = tmp_path / "run"
    proc = _cli("train", corpus, "--out", out, *SMALL, "--max-steps", "5", limit=100_000)
    assert "cannot write" in _assert_one_line(proc) and "cache" in proc.stderr
    assert not out.exists()


def test_an_unreadable_corpus_is_exit_2(small, tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kw):  # what mode 000 does to anyone but root
        if Path(path) == small:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", denied)
    message = one_line_error(run("train", small, "--out", tmp_path / "run", *SMALL, "--max-steps", "5"))
    assert "Permission denied" in message and "small.txt" in message


def test_an_out_folder_that_cannot_be_made_is_exit_2(small):
    assert "cannot write to /proc" in one_line_error(run("train", small, "--out", "/proc/charrnn-no", *SMALL))


# --- 6, 7, 8. numbers out of range --------------------------------------------------------------------
def test_seeds_out_of_range_are_refused(small, tmp_path, trained_run):
    for seed in ("99999999999999999999", "-1"):
        one_line_error(run("train", small, "--out", tmp_path / "run", *SMALL, "--seed", seed))
        one_line_error(run("sample", trained_run, "--seed", seed))
    assert run("sample", trained_run, "--seed", str(2**63 - 1), "--length", "5").exit_code == 0


def test_durations_out_of_range_are_refused(small, tmp_path):
    for option in ("--max-time", "--dist-timeout"):
        for value in ("9" * 400, "1e400", "100000h", "0s"):
            one_line_error(run("train", small, "--out", tmp_path / "run", *SMALL, option, value))
    one_line_error(run("compare", small, "--max-time", "9" * 400, "--out", tmp_path / "r"))


@pytest.mark.parametrize("args", [["--hidden", "1000000"], ["--embed", "1000000000"], ["--layers", "1000000"],
                                  ["--batch-size", "1000000000"]])
def test_a_model_or_batch_beyond_memory_is_refused_before_allocating(small, tmp_path, args, no_building):
    assert "of memory" in one_line_error(run("train", small, "--out", tmp_path / "run", *SMALL, *args))
    assert not (tmp_path / "run").exists()


@pytest.fixture
def no_building(monkeypatch):
    """Building any model fails the test: what is refused must be refused before anything is allocated."""
    def never(self, config):
        raise AssertionError(f"a {config.model} model was built")
    for fam in families.families():
        monkeypatch.setattr(type(fam), "build", never)


def test_a_context_beyond_memory_is_refused(small, tmp_path):
    assert "of memory" in one_line_error(run("train", small, "--out", tmp_path / "run", "--model", "transformer",
                                             "--context", "1000000000", "--device", "cpu", "--quiet"))


def test_too_many_samples_at_once_are_refused_at_once(trained_run, monkeypatch):
    def never(*args, **kw):
        raise AssertionError("the prime was read: the batch was allocated before the memory check")
    monkeypatch.setattr(families.base.Family, "read_prime", never)
    assert "of memory" in one_line_error(run("sample", trained_run, "-n", "10000000", "--length", "2"))


def test_the_memory_check_refuses_what_this_machine_cannot_hold(small, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "host_available", lambda: 100 << 10)  # a machine with 100 KiB free
    assert "more than the 100.0 KiB free" in one_line_error(
        run("train", small, "--out", tmp_path / "run", *SMALL, "--max-steps", "5"))
    monkeypatch.setattr(memory, "host_available", lambda: None)  # nothing known: nothing refused
    assert run("train", small, "--out", tmp_path / "run", *SMALL, "--max-steps", "2").exit_code == 0


def test_a_crafted_config_cannot_make_loading_allocate(trained_run, tmp_path, no_building):
    ckpt = torch.load(trained_run / ck.BEST, weights_only=True)
    for key, value in (("hidden", 10**6), ("n_layers", 10**9), ("vocab_size", 10**9)):
        c = copy.deepcopy(ckpt)
        c["model_config"][key] = value
        torch.save(c, tmp_path / "big.pt")
        one_line_error(run("info", tmp_path / "big.pt"))


# --- 9. FIFOs and devices ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_is_refused_at_once(small, tmp_path, trained_run, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.txt"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    for args in (["train", path, "--out", tmp_path / "run", *SMALL], ["sample", path], ["info", path],
                 ["eval", path, small], ["eval", trained_run, path]):
        assert "not a regular file" in one_line_error(within(20, *args))


def test_a_fifo_beside_a_checkpoint_is_refused(run_copy_hostile):
    (run_copy_hostile / ck.TOKENIZER).unlink()
    os.mkfifo(run_copy_hostile / ck.TOKENIZER)
    assert "not a regular file" in one_line_error(within(20, "sample", run_copy_hostile))


@pytest.fixture
def run_copy_hostile(trained_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(trained_run, dst)
    return dst


# --- 11. file names that are not UTF-8 ----------------------------------------------------------------
def test_a_corpus_name_with_a_non_utf8_byte_trains_and_writes_valid_json(tmp_path):
    name = os.fsdecode(b"caf\xff.txt")
    corpus = tmp_path / name
    corpus.write_text(make_text(20_000), encoding="utf-8")
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, *SMALL, "--max-steps", "5")
    assert result.exit_code == 0, result.output
    config = json.loads((out / ck.CONFIG).read_bytes().decode("utf-8"))
    assert config["run"]["corpus"].endswith("caf\\xff.txt")
    tiny = tmp_path / os.fsdecode(b"tiny\xff.txt")
    tiny.write_text("abc")
    assert "too small" in one_line_error(run("train", tiny, "--out", tmp_path / "other", *SMALL))
    assert not (tmp_path / "other").exists()


# --- 12, 14. damaged, crafted and hostile checkpoints ------------------------------------------------------
def _damaged(ckpt, case):
    c = copy.deepcopy(ckpt)
    if case == "format only":
        return {"format": ck.FORMAT}
    if case.startswith("no "):
        del c[case[3:]]
    elif case == "step is text":
        c["trainer"]["progress"]["step"] = "x"
    elif case == "step is a float":
        c["trainer"]["progress"]["step"] = 1.5
    elif case == "unknown setting":
        c["train_config"]["rm_rf"] = True
    elif case == "model is a list":
        c["model"] = [1, 2]
    elif case == "val_frac 2":
        c["run"]["val_frac"] = 2.0
    elif case == "unknown model":
        c["model_config"]["model"] = "cnn"
    return c


@pytest.mark.parametrize("case", ["format only", "no model_config", "no trainer", "no run", "no train_config",
                                  "no tokenizer", "no model", "step is text", "step is a float", "unknown setting",
                                  "model is a list", "val_frac 2", "unknown model"])
def test_a_damaged_checkpoint_is_one_line_in_every_command(run_copy_hostile, trained_run, case):
    path = run_copy_hostile / ck.BEST
    torch.save(_damaged(torch.load(path, weights_only=True), case), path)
    (run_copy_hostile / ck.LAST).unlink()
    corpus = trained_run.parent.parent / "play.txt"
    for args in (["sample", path], ["info", path], ["eval", path, corpus],
                 ["train", corpus, "--out", run_copy_hostile, "--resume", "--quiet"]):
        assert "checkpoint" in one_line_error(run(*args))


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("form", ["raw pickle", "torch zip", "eval"])
def test_a_checkpoint_with_code_in_it_never_runs_it_and_prints_only_one_line(run_copy_hostile, tmp_path, form):
    marker = tmp_path / "pwned"
    path = run_copy_hostile / ck.BEST
    if form == "raw pickle":
        path.write_bytes(pickle.dumps({"format": ck.FORMAT, "x": _System(f"touch {marker}")}))
    elif form == "torch zip":
        torch.save({"format": ck.FORMAT, "model": _System(f"touch {marker}")}, path)
    else:
        path.write_bytes(b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = one_line_error(run("sample", path))
    assert "not a readable charrnn checkpoint" in message and not marker.exists()
    assert not caught  # torch's UserWarning about pickle protocols would be a second line on stderr


# --- 13, 15. metrics.jsonl ------------------------------------------------------------------------------
@pytest.mark.parametrize("junk", [b'{"kind": "train", "step": null}', b'{"kind": "train", "step": "x"}', b"\xff\xfe",
                                  b'{"step": 1e400}', b"[1, 2]", b'{"kind": "val", "step": 10'])
def test_junk_in_metrics_is_dropped_on_resume(fp32_run, small, junk):
    with open(fp32_run / ck.METRICS, "ab") as f:
        f.write(junk + b"\n")
    result = run("train", small, "--out", fp32_run, "--resume", "--max-steps", "25", "--quiet")
    assert result.exit_code == 0, result.output
    records = strict_json_lines(fp32_run / ck.METRICS)
    assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20, 25]


def test_resumed_metrics_equal_unbroken_metrics_record_for_record(small, tmp_path):
    from charrnn.training import RunOptions, train

    # logged every 10 (the default); the dropout and weight drop masks of a resumed run are the unbroken one's
    settings = dict(model="lstm", n_layers=1, hidden=32, embed=16, dropout=0.1, weight_drop=0.3, batch_size=4,
                    seq_len=16, lr=1e-2, warmup_steps=5, max_steps=40, eval_interval=7, seed=3)
    opts = dict(corpus=str(small), precision="fp32", device="cpu", quiet=True, sample_len=0)
    train(RunOptions(out=tmp_path / "a", **opts), settings)
    stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 17 else None)  # noqa: E731
    assert train(RunOptions(out=tmp_path / "b", **opts), settings, on_trainer=stop)["reason"] == "interrupted"
    train(RunOptions(out=tmp_path / "b", resume=True, **opts), {})
    timing = ("elapsed", "chars_per_s")

    def deterministic(run_dir):
        return [{k: v for k, v in r.items() if k not in timing} for r in ck.read_metrics(run_dir)]

    assert deterministic(tmp_path / "b") == deterministic(tmp_path / "a")  # step 20 averages steps 11-20 in both


# --- 16. one writer per run folder --------------------------------------------------------------------------
def _start_training(corpus, out, *extra, worker=None, env=None):
    program = [str(ROOT / "tests" / worker)] if worker else ["-m", "charrnn"]
    cmd = [sys.executable, *program, "train", str(corpus), "--out", str(out), *SMALL, "--precision", "fp32",
           "--eval-interval", "5", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**cli_env(), **(env or {})})


def _wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(small, tmp_path):
    out = tmp_path / "run"
    first = _start_training(small, out, "--max-steps", "100000")
    try:
        _wait_for(out / ck.LAST, first)
        for args in ([*SMALL, "--max-steps", "5"], ["--resume", "--quiet"]):
            message = one_line_error(run("train", small, "--out", out, *args))
            assert f"being written by another charrnn process (pid {first.pid})" in message
    finally:
        first.kill()  # kill -9: the kernel drops its lock
        first.wait()
    (out / ".last.pt.x1y2.tmp").write_bytes(b"torn")  # what a kill mid-write leaves
    result = run("train", small, "--out", out, "--resume", "--max-steps", "10", "--quiet")
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".*.tmp")) and not (out / ck.LOCK).exists()
    steps = [r["step"] for r in ck.read_metrics(out, "train")]
    assert steps == sorted(set(steps))  # every step logged once


@pytest.mark.slow
def test_kill_9_mid_step_and_mid_checkpoint_never_breaks_the_run_and_resume_is_exact(small, tmp_path):
    settings = ["--max-steps", "60", "--seed", "5"]
    unbroken = _start_training(small, tmp_path / "a", *settings)
    assert unbroken.wait(120) == 0, unbroken.stderr.read()
    out = tmp_path / "b"
    # mid-run; half-way through a checkpoint's write; after resuming, mid-run again (checkpoints every 5 steps)
    for kill in ("step:13", "save:3", "step:37"):
        proc = _start_training(small, out, *(settings if kill == "step:13" else ["--resume", "--quiet"]),
                               worker="kill_worker.py", env={"CHARRNN_TEST_KILL": kill})
        assert proc.wait(120) == -9, proc.stderr.read()  # killed where it was told to be, on any machine
        ck.load_checkpoint(out / ck.LAST)  # whole, whatever moment the kill came at
    proc = _start_training(small, out, "--resume", "--quiet")
    assert proc.wait(120) == 0, proc.stderr.read()
    a, b = ck.load_checkpoint(tmp_path / "a" / ck.LAST), ck.load_checkpoint(out / ck.LAST)
    assert b["trainer"]["progress"]["step"] == 60
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["loss"] for r in ck.read_metrics(out, "train")] == [r["loss"] for r in ck.read_metrics(tmp_path / "a", "train")]


# --- the rest of the list ------------------------------------------------------------------------
def test_a_new_run_never_overwrites_a_users_own_files(small, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in (ck.CONFIG, ck.TOKENIZER, ck.METRICS):
        (out / name).write_text("my own notes\n")
        assert name in one_line_error(run("train", small, "--out", out, *SMALL, "--max-steps", "3"))
        assert (out / name).read_text() == "my own notes\n"
        (out / name).unlink()
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_failed_first_run_leaves_no_folder_behind(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"abcdefghij" * 6)  # too small for one batch: it fails after reading the corpus
    assert "corpus too small" in one_line_error(run("train", corpus, "--out", tmp_path / "run", *SMALL))
    assert not (tmp_path / "run").exists()


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(small, tmp_path):
    out = tmp_path / "run"
    assert run("train", small, "--out", out, *SMALL, "--max-steps", "5").exit_code == 0
    for name in (ck.LAST, ck.BEST):
        (out / name).unlink()  # as if killed before it wrote them: config.json, metrics.jsonl, cache/ remain
    assert "stopped before writing one" in one_line_error(run("train", small, "--out", out, "--resume"))
    assert run("train", small, "--out", out, *SMALL, "--max-steps", "5").exit_code == 0


def test_a_stop_string_is_one_string(trained_run):
    s = Sampler.load(trained_run, weights="fp32")
    text = s.sample(prime="KING:", length=300, seed=1, temperature=1.0)
    gen = text[5:]
    # a two-character stop whose characters each occur, alone, before the pair does
    stop = next(gen[i:i + 2] for i in range(len(gen) - 1)
                if min(gen.find(gen[i]), gen.find(gen[i + 1])) < gen.find(gen[i:i + 2]))
    assert s.sample(prime="KING:", length=300, seed=1, temperature=1.0, stop=stop) == text[:5 + gen.find(stop)]
    assert s.sample(prime="KING:", length=300, seed=1, temperature=1.0, stop=list(stop)) == \
        text[:5 + min(gen.find(stop[0]), gen.find(stop[1]))]  # a list of characters: each its own stop


def test_error_text_is_cut_between_words():
    assert one_line("alpha beta gamma delta", 15) == "alpha beta..."
    assert one_line("x" * 50, 10) == "xxxxxxx..."
    assert one_line("short\nsecond line") == "short"


def test_a_bare_charrnn_prints_its_help_and_exits_0():
    result = run()
    assert result.exit_code == 0 and "Usage:" in result.stdout and not result.stderr


def test_help_and_corpus_list_import_neither_torch_nor_numpy():
    code = ("import io, sys, contextlib\nfrom charrnn.cli import cli\n"
            "for args in (['--help'], ['train', '--help'], ['sample', '--help'], ['compare', '--help'], "
            "['corpus', 'list']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            cli(args)\n        except SystemExit:\n            pass\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
            "from charrnn import Sampler\nprint(Sampler.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "Sampler"]


def test_strict_json_everywhere_a_run_writes_it(fp32_run):
    strict_json_lines(fp32_run / ck.METRICS)
    json.loads((fp32_run / ck.CONFIG).read_text(), parse_constant=lambda name: (_ for _ in ()).throw(ValueError()))
    assert to_json({"a": float("nan"), "b": [float("inf"), 1.0]}) == '{"a": null, "b": [null, 1.0]}'


def test_eval_of_a_run_folder_it_cannot_write_caches_nothing(trained_run, tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK else real_access(p, mode, **kw))
    corpus = tmp_path / "other.txt"
    corpus.write_text(make_text(5000, seed=4), encoding="utf-8")
    before = sorted(p.name for p in (trained_run / ck.CACHE).iterdir())
    result = run("eval", trained_run, corpus, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (trained_run / ck.CACHE).iterdir()) == before
    assert np.isfinite(json.loads(result.stdout)["loss_nats"])

"""Data-parallel training under torchrun: 2 CPU processes over gloo follow the single-process run.

The torchrun tests are marked `distributed` (deselect with -m "not distributed"); each launches
`python -m torch.distributed.run --standalone` on a tiny model and takes seconds. With dropout 0,
a W-process run with global batch B reads the same streams as one process with batch B, so its
losses and weights equal the single-process ones up to the order of float additions.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_text

from charrnn import checkpoint as ck
from charrnn.cli import cli
from charrnn.training import RunOptions, train

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "dist_worker.py"

# 24 steps of a tiny LSTM, validated and checkpointed every 8; logged every 10 (the default).
SETTINGS = dict(model="lstm", n_layers=2, hidden=32, embed=16, dropout=0.0, batch_size=4, seq_len=16, max_steps=24,
                lr=1e-2, warmup_steps=5, seed=7, eval_interval=8)
ARGS = ["--model", "lstm", "--layers", "2", "--hidden", "32", "--embed", "16", "--dropout", "0", "--batch-size", "4",
        "--seq-len", "16", "--max-steps", "24", "--lr", "1e-2", "--warmup", "5", "--seed", "7", "--eval-interval", "8",
        "--precision", "fp32", "--device", "cpu", "--sample-len", "0"]
RUN_FILES = {"best.pt", "last.pt", "config.json", "tokenizer.json", "metrics.jsonl", "cache"}


def torchrun(*args, nproc=2, max_restarts=0, fault=None, timeout=240):
    """Launch `charrnn` (or the fault-injecting worker) under torchrun; returns the finished process."""
    entry = ["-m", "charrnn"] if fault is None else [str(WORKER)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", *entry, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("CHARRNN_TEST_FAULT", None)
    if fault is not None:
        env["CHARRNN_TEST_FAULT"] = fault
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _why(stderr: str) -> str:
    """The reason in brackets at the end of a lost-contact error line."""
    line = next(ln for ln in stderr.splitlines() if "lost contact with another rank" in ln)
    return re.search(r"\[([^\]]*)\]", line).group(1)


def records(run, kind):
    return [r for r in map(json.loads, (run / ck.METRICS).read_text().splitlines()) if r["kind"] == kind]


def assert_same_run(run, reference, atol=1e-5):
    """Same steps logged once each, the same losses, the same final weights and carried state. A resumed
    run's first record after the checkpoint averages the steps before it too (they are in last.pt)."""
    got, want = records(run, "train"), records(reference, "train")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-5)
    assert [r["loss_nats"] for r in records(run, "val")] == \
           pytest.approx([r["loss_nats"] for r in records(reference, "val")], rel=1e-5)
    a, b = ck.load_checkpoint(run / ck.LAST), ck.load_checkpoint(reference / ck.LAST)
    assert a["trainer"]["progress"]["step"] == b["trainer"]["progress"]["step"]
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=atol)
    for x, y in zip(a["trainer"]["carry"], b["trainer"]["carry"]):
        assert x.shape == y.shape  # the global state: all 4 streams, whoever trained them
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The single-process run every distributed run here must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0), SETTINGS)
    return out


@pytest.fixture(scope="module")
def killed_run(corpus, tmp_path_factory):
    """A 2-process run whose rank 1 was SIGKILLed before step 14; its last checkpoint is step 8."""
    out = tmp_path_factory.mktemp("killed") / "run"
    return out, torchrun("train", corpus, "--out", out, *ARGS, fault="kill:1:13")


# --- in-process: the data layout and gradient accumulation --------------------------------------
def test_grad_accum_gives_the_same_steps_as_one_batch(corpus, reference, tmp_path):
    train(RunOptions(corpus=str(corpus), out=tmp_path / "run", precision="fp32", device="cpu", quiet=True,
                     sample_len=0), {**SETTINGS, "grad_accum": 4})
    assert_same_run(tmp_path / "run", reference)


@pytest.mark.parametrize("batcher", ["streams", "windows"])
def test_ranks_rows_make_up_the_single_process_batch(batcher):
    import numpy as np

    from charrnn.batches import StreamBatcher, WindowBatcher
    from charrnn.distributed import World

    cls = StreamBatcher if batcher == "streams" else WindowBatcher
    ids = np.arange(5000)
    whole = cls(ids, batch_size=8, seq_len=16, seed=3)
    for epoch, k in [(0, 0), (0, 5), (2, 3)]:
        parts = [cls(ids, 8, 16, seed=3, rows=World(rank=r, world_size=4).rows(8)).batch(epoch, k) for r in range(4)]
        assert all(p[0].shape == (2, 16) for p in parts)
        for i in (0, 1):
            assert torch.equal(torch.cat([p[i] for p in parts]), whole.batch(epoch, k)[i])


def test_a_batch_must_split_evenly_over_the_ranks():
    from charrnn.distributed import World
    from charrnn.errors import CharrnnError

    assert World(rank=2, world_size=4).rows(16) == range(8, 12)
    with pytest.raises(CharrnnError, match="batch-size 6 does not split evenly over 4 processes"):
        World(rank=0, world_size=4).rows(6)
    with pytest.raises(CharrnnError, match="--grad-accum 3 cannot split evenly: use a multiple of 6"):
        World(rank=1, world_size=2).rows(8, grad_accum=3)


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "6", "--grad-accum", "4"], "--grad-accum 4 cannot split evenly"),
    (["--grad-accum", "0"], "grad-accum"),
    (["--grad-accum", "3", "--max-time", "5s"], "the budget's preset: batch-size 16"),  # no --batch-size given
])
def test_batch_that_does_not_split_is_one_line_error(corpus, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "2",
                                      "--device", "cpu", "--quiet", *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ") and message in result.stderr
    assert not (tmp_path / "run" / ck.LAST).exists()


# --- torchrun: 2 processes on the CPU over gloo ---------------------------------------------------
@pytest.mark.distributed
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_processes_follow_the_single_process_run(corpus, reference, tmp_path, grad_accum):
    out = tmp_path / "run"
    proc = torchrun("train", corpus, "--out", out, *ARGS, "--grad-accum", grad_accum)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == RUN_FILES  # one writer: no per-rank or temporary files
    assert proc.stderr.count("done: 24 steps") == 1  # rank 0 speaks for the job
    assert "2 processes (cpu fp32, 2 streams each)" in proc.stderr
    assert_same_run(out, reference)
    saved = ck.load_checkpoint(out / ck.LAST)
    assert saved["trainer"]["world_size"] == 2 and len(saved["trainer"]["rank_rng"]) == 2
    assert saved["trainer"]["progress"]["chars"] == 24 * 4 * 16  # counted over both ranks
    config = json.loads((out / ck.CONFIG).read_text())
    assert config["world_size"] == 2 and config["train"]["grad_accum"] == grad_accum


@pytest.mark.distributed
def test_two_processes_train_a_transformer_as_one_does(corpus, tmp_path):
    gpt = ["--model", "transformer", "--layers", "1", "--hidden", "32", "--heads", "4", "--context", "16",
           "--dropout", "0", "--batch-size", "4", "--max-steps", "12", "--lr", "1e-2", "--warmup", "2", "--seed", "7",
           "--eval-interval", "6", "--precision", "fp32", "--device", "cpu", "--sample-len", "0"]
    one = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "one"), "--quiet", *gpt])
    assert one.exit_code == 0, one.output
    proc = torchrun("train", corpus, "--out", tmp_path / "two", *gpt)
    assert proc.returncode == 0, proc.stderr
    got, want = records(tmp_path / "two", "train"), records(tmp_path / "one", "train")
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-5)
    assert [r["loss_nats"] for r in records(tmp_path / "two", "val")] == \
           pytest.approx([r["loss_nats"] for r in records(tmp_path / "one", "val")], rel=1e-5)
    a, b = ck.load_checkpoint(tmp_path / "two" / ck.LAST), ck.load_checkpoint(tmp_path / "one" / ck.LAST)
    assert a["trainer"]["progress"]["chars"] == b["trainer"]["progress"]["chars"] == 12 * 4 * 16
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5)


@pytest.mark.distributed
def test_two_processes_train_a_mingru_as_one_does(corpus, tmp_path):
    """The minGRU's carried state is split over the ranks and gathered into last.pt as an LSTM's is."""
    args = ["--model", "mingru", "--layers", "2", "--hidden", "32", "--dropout", "0", "--batch-size", "4",
            "--seq-len", "16", "--max-steps", "12", "--lr", "1e-2", "--warmup", "2", "--seed", "7",
            "--eval-interval", "6", "--precision", "fp32", "--device", "cpu", "--sample-len", "0"]
    one = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "one"), "--quiet", *args])
    assert one.exit_code == 0, one.output
    proc = torchrun("train", corpus, "--out", tmp_path / "two", *args)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(tmp_path / "two", tmp_path / "one")


@pytest.mark.distributed
def test_ranks_train_the_preset_rank_0_chose(corpus, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train", corpus, "--out", out, "--layers", "1", "--hidden", "32", "--embed", "16", "--batch-size",
                    "4", "--seq-len", "16", "--max-steps", "4", "--precision", "fp32", "--device", "cpu",
                    "--sample-len", "0", fault="untimed:1:0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("settings from the budget") == 1
    assert json.loads((out / ck.CONFIG).read_text())["run"]["preset"]["chars_per_s"] > 0


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_leaving_the_job_stops_the_threads_of_our_collectives(corpus, tmp_path):
    # DDP keeps its process group (and its gloo worker threads) alive until the process exits. Our
    # own gathers run on a group that close() frees: a worker still letting go of a gather's tensors
    # while Python shuts down aborts the process (SIGABRT after "done", about 1 run in 20).
    proc = torchrun("train", corpus, "--out", tmp_path / "run", *ARGS, fault="close:1:0")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.distributed
def test_killed_rank_ends_the_job_with_a_clear_message(killed_run):
    out, proc = killed_run
    assert proc.returncode != 0
    assert "lost contact with another rank" in proc.stderr  # rank 0's one-line error
    assert "time" not in _why(proc.stderr).lower()  # it saw the peer go, without waiting for the 10-minute timeout
    assert f'File "{ROOT / "charrnn"}' not in proc.stderr  # no Python traceback through charrnn
    assert ck.load_checkpoint(out / ck.LAST)["trainer"]["progress"]["step"] == 8
    assert [r["step"] for r in records(out, "train")] == [10]  # logged after the checkpoint, before the kill


@pytest.mark.distributed
def test_rank_killed_before_training_ends_the_job_with_a_clear_message(corpus, tmp_path):
    proc = torchrun("train", corpus, "--out", tmp_path / "run", *ARGS, fault="kill:1:setup")
    assert proc.returncode != 0
    assert "lost contact with another rank" in proc.stderr
    assert f'File "{ROOT / "charrnn"}' not in proc.stderr
    assert not (tmp_path / "run" / ck.LAST).exists()


@pytest.mark.distributed
def test_killed_run_resumes_from_its_checkpoint(killed_run, corpus, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed_run[0], out)
    proc = torchrun("train", corpus, "--out", out, "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert_same_run(out, reference)  # the steps after the checkpoint are trained (and logged) again


@pytest.mark.distributed
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_with_another_number_of_processes(killed_run, corpus, reference, tmp_path, grad_accum):
    # The checkpoint holds the global carried state, so one process can take over both ranks' streams,
    # in one batch or (grad_accum 2) in two micro-batches of 2 streams, the split the two ranks had.
    out = tmp_path / "run"
    shutil.copytree(killed_run[0], out)
    train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0,
                     resume=True), {"grad_accum": grad_accum})
    assert_same_run(out, reference)


@pytest.mark.distributed
def test_elastic_restart_resumes_from_the_last_checkpoint(corpus, reference, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train", corpus, "--out", out, *ARGS, max_restarts=1, fault="kill:1:13")
    assert proc.returncode == 0, proc.stderr
    assert f"torchrun restart 1: resuming from {out / ck.LAST}" in proc.stderr
    assert_same_run(out, reference)


@pytest.mark.distributed
def test_hung_rank_times_out_instead_of_hanging(corpus, tmp_path):
    # the stalled rank sleeps 120 s: the survivor gives up after its 8 s (torchrun's own timeout guards a hang)
    proc = torchrun("train", corpus, "--out", tmp_path / "run", *ARGS, "--dist-timeout", "8s", fault="stall:1:5",
                    timeout=110)
    assert proc.returncode != 0
    assert "lost contact with another rank" in proc.stderr and "time" in _why(proc.stderr).lower()


# --- CUDA (NCCL) ----------------------------------------------------------------------------------
CUDA_ARGS = [a if a != "cpu" else "cuda" for a in ARGS]


@pytest.fixture(scope="module")
def cuda_reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda-reference") / "run"
    train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cuda", quiet=True, sample_len=0), SETTINGS)
    return out


@pytest.mark.cuda
@pytest.mark.distributed
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nccl_run_follows_the_single_process_run(corpus, cuda_reference, tmp_path):
    # One GPU: a world of one still runs NCCL, DDP and the gloo side group; two GPUs: two ranks.
    nproc = min(torch.cuda.device_count(), 2)
    out = tmp_path / "run"
    proc = torchrun("train", corpus, "--out", out, *CUDA_ARGS, "--grad-accum", 2, nproc=nproc)
    assert proc.returncode == 0, proc.stderr
    # cuDNN sums a micro-batch's gradients in another order than the whole batch's: on an H200 one
    # weight in 4,896 ended 1.6e-5 away after 24 steps
    assert_same_run(out, cuda_reference, atol=1e-4)
    assert ck.load_checkpoint(out / ck.LAST)["trainer"]["world_size"] == nproc


@pytest.mark.cuda
@pytest.mark.distributed
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_elastic_restart_resumes(corpus, cuda_reference, tmp_path):
    nproc = min(torch.cuda.device_count(), 2)
    out = tmp_path / "run"
    proc = torchrun("train", corpus, "--out", out, *CUDA_ARGS, nproc=nproc, max_restarts=1,
                    fault=f"kill:{nproc - 1}:13")
    assert proc.returncode == 0, proc.stderr
    assert "torchrun restart 1: resuming" in proc.stderr
    assert_same_run(out, cuda_reference)

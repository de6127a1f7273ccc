"""`make bench-gpu` (benchmarks/gpu.py): on a machine without a GPU it says so and exits 0; its
measurements run, at toy sizes on the CPU (--smoke), so the script a GPU session runs is known to work
before a GPU's time is spent on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args, tmp_path):
    env_args = [sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path / "gpu.jsonl"), "--work",
                str(tmp_path / "work"), *args]
    return subprocess.run(env_args, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would measure it")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    result = _bench(tmp_path=tmp_path)
    assert result.returncode == 0 and "no CUDA GPU here" in result.stdout, result.stderr
    assert not (tmp_path / "gpu.jsonl").exists()


@pytest.mark.slow
def test_every_measurement_runs_at_toy_sizes_on_the_cpu(tmp_path):
    result = _bench("--smoke", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert [r["what"] for r in rows] == ["train", "train"] + ["train speed", "sample speed"] * 3
    assert all(r["smoke"] and r["torch"] == torch.__version__ and r["date"] for r in rows)
    assert all(0 < r["val_loss"] < 5 and r["steps"] > 0 for r in rows[:2])
    assert all(r["chars_per_s"] > 0 for r in rows if r["what"] == "train speed")
    assert all(r["chars_per_s_1"] > 0 and r["chars_per_s_64"] > 0 for r in rows if r["what"] == "sample speed")

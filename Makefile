# Everything a fresh machine needs: `make demo` and `make test` create the venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch. On this project's machines pip takes it from a wheel already on disk;
# elsewhere it comes from PyPI. A GPU user installs torch their own way first (see README).
TORCH  ?= torch==2.13.0
export CHARRNN_CORPORA ?= $(abspath ../shared/corpora)
# How long `make demo` trains (`make demo DEMO_TIME=10m`); tests/test_docs.py runs the demo with 10s.
DEMO_TIME ?= 2m

.PHONY: venv test test-fast demo pictures bench bench-quick bench-minrnn bench-export bench-finetune bench-serve bench-gpu bench-summary quality clean

$(BIN)/charrnn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

venv: $(BIN)/charrnn

# Everything CI runs, the installed wheel's test included (no network needed).
test: venv
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# For development: without the end-to-end (`slow`) and torchrun (`distributed`) tests; under 90 s.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not distributed"

demo: venv
	rm -rf checkpoints/demo
	$(BIN)/charrnn train tinyshakespeare --max-time $(DEMO_TIME) --out checkpoints/demo
	$(BIN)/charrnn sample checkpoints/demo --prime "ROMEO:" --length 500 --temperature 0.8 --seed 1

# The README's first screen (benchmarks/readme.py): the demo's commands for DEMO_TIME and the README's sample
# command, a row in benchmarks/readme.jsonl, the README's output block from it, and docs/img/*.png from
# `charrnn inspect` and a 60-second `charrnn compare` (headless Chromium): DEMO_TIME, then two minutes of
# training and the measurements after it. Run it on a quiet machine.
pictures: venv
	$(BIN)/python benchmarks/readme.py --demo-time $(DEMO_TIME)

# The speed suite (benchmarks/README.md): ~8 minutes on 2 cores; writes benchmarks/results.json and appends
# the run to benchmarks/speed.jsonl.
bench: venv
	$(BIN)/python -m benchmarks

# minGRU and minLSTM against the LSTM: training and sampling speed, about 3 minutes
bench-minrnn: venv
	$(BIN)/python -m benchmarks.minrnn

# charrnn export's figures: ONNX Runtime against the sampler, the page in Chromium (benchmarks/export.py);
# RUN: a trained run folder, for the page's agreement with the sampler. About 10 minutes.
bench-export: venv
	$(BIN)/python -m benchmarks.export $(if $(RUN),--run $(RUN))

# charrnn serve under load: batching against one request at a time, 1 to 128 clients, about 4 minutes
bench-serve: venv
	$(BIN)/python -m benchmarks.serve

bench-quick: venv
	$(BIN)/python -m benchmarks --quick --out benchmarks/results-quick.json

# The GPU check (benchmarks/gpu.py, about 5 minutes on one GPU; says so and exits 0 without one). Run it
# with the Python whose torch is built for CUDA, from the checkout as it is: no venv, which would install
# the CPU build of torch. E.g. `make bench-gpu PYTHON=/opt/conda/bin/python`.
bench-gpu:
	PYTHONPATH=. $(PYTHON) -m benchmarks.gpu

# The quality bar: the defaults against ../shared/bench/lstm_reference.py, 60 s and 5 min, on
# tinyshakespeare and on 5 MB of Python source built at run time, three alternating runs a side (over an hour).
quality: venv
	$(BIN)/python benchmarks/quality.py

# Fine-tuning a tinyshakespeare model on new text against training from scratch for the same time
# (benchmarks/finetune.py; about 10 minutes).
bench-finetune: venv
	$(BIN)/python benchmarks/finetune.py

# benchmarks/README.md's "Current results", regenerated from the committed benchmarks/*.jsonl rows
# (standard library only: no venv needed). `make test` checks that it is up to date.
bench-summary:
	$(PYTHON) -m benchmarks.summary --write

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

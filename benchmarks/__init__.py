"""charrnn's speed suite: `python -m benchmarks` (or `make bench`); see benchmarks/README.md."""

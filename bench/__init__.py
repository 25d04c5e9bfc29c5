"""Benchmarks: `make bench` runs `python -m bench.cold_start`. Results go to `bench/results/`."""

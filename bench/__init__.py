"""Reproducible benchmarks: `make bench` (100k x 384) and `make bench-full` (1M x 128)."""

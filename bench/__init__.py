"""Benchmark-only code (``bench.perf``) beside the benchmark scripts; the product, including the
tiny autoencoder and the synthetic scores that ``make demo`` shares with the benchmarks, is under
``src/``."""

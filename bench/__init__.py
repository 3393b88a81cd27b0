"""Benchmark-only code (``bench.perf``, ``bench.vae_training``, ``bench.synthetic_scoring``) beside
the benchmark scripts; the product is under ``src/``."""

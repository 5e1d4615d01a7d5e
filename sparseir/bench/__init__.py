"""Retrieval benchmark harness: sparseir against Lucene BM25, dense cosine and Lucene impact search.

    from sparseir.bench import load_config, run_bench
    run_bench(load_config("bench/configs/scifact.toml"))
"""

from sparseir.bench.config import BenchConfig, ConfigError, SystemSpec, load_config, systems_from_flags
from sparseir.bench.runner import run_bench

__all__ = ["BenchConfig", "ConfigError", "SystemSpec", "load_config", "run_bench", "systems_from_flags"]

"""Retrieval benchmark harness: sparseir against Lucene BM25, dense cosine and Lucene impact search.

    from sparseir.bench import load_config, run_bench
    run_bench(load_config("bench/configs/scifact.toml"))

Names are imported lazily, so the ``sparseir bench`` parser costs no heavy imports.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"BenchConfig": "config", "ConfigError": "config", "SystemSpec": "config", "load_config": "config",
            "systems_from_flags": "config", "run_bench": "runner"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

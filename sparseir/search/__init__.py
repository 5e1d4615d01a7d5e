"""Exact and approximate top-k search, batch search and explanations.

Names are imported lazily: importing this package (or :mod:`sparseir.search.params`) pulls in
neither Numba nor torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Searcher": "searcher", "Hit": "results", "Contribution": "results", "Run": "results", "to_run": "results", "EncoderMismatchError": "searcher",
    "DocumentNotFoundError": "searcher",
    "numba_threads": "searcher",
    "ApproxSearcher": "approx", "ApproxIndex": "approx", "save_approx": "approx",
    "ApproxParams": "params", "check_k": "params",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'sparseir.search' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

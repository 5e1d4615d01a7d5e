"""Exact top-k dot-product search, batch search and explanations."""

from .searcher import Contribution, EncoderMismatchError, Hit, Searcher, numba_threads

__all__ = ["Contribution", "EncoderMismatchError", "Hit", "Searcher", "numba_threads"]

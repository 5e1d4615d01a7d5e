"""Exact top-k dot-product search, batch search and explanations."""

from .approx import ApproxIndex, ApproxParams, ApproxSearcher
from .searcher import Contribution, EncoderMismatchError, Hit, Searcher, numba_threads

__all__ = ["ApproxIndex", "ApproxParams", "ApproxSearcher", "Contribution", "EncoderMismatchError", "Hit",
           "Searcher", "numba_threads"]

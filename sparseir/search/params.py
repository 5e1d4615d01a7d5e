"""Search parameters and their command-line options; imports neither Numba nor torch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from ..errors import UsageError

SOURCES = ("pruned", "full", "impact")


def check_k(k: int) -> int:
    """``k`` as an int >= 1, else :class:`UsageError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k (results per query) must be an integer >= 1, got {k!r}")
    return k


@dataclass(frozen=True)
class ApproxParams:
    """Knobs of the approximate mode. Build-time: ``n_postings``, ``block_size``, ``keep``; the rest per query.

    The defaults reach recall@10 >= 0.95 of exact search on SciFact and on realtext (366k real
    documents, MS MARCO queries) with splade-tiny vectors (see ``bench/results/speed.md``). Larger
    ``keep``, ``query_cut``, ``candidates``, ``budget``, ``n_postings`` and smaller ``heap_factor``
    trade speed for recall.
    """

    source: str = "impact"      #: candidates from the "impact"-pruned or "full" lists of the cut dims, or "pruned" blocks
    n_postings: int = 4096      #: "pruned": postings kept per dimension (the highest impacts)
    block_size: int = 32        #: "pruned": postings per block; a block's summary is its maximum impact
    keep: float = 0.3           #: "impact": fraction of all postings kept, the highest impacts
    query_cut: int = 12         #: heaviest query dimensions that generate candidates
    budget: int = 20_000        #: "pruned": distinct documents touched per query (0: no limit)
    candidates: int = 100       #: most documents re-scored exactly
    heap_factor: float = 0.0    #: stop re-scoring below heap_factor * k-th exact score (0: score all)

    def __post_init__(self) -> None:
        for name in ("n_postings", "block_size", "query_cut", "candidates"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.source not in SOURCES:
            raise UsageError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.budget < 0:
            raise UsageError(f"budget must be >= 0, got {self.budget}")
        if not 0.0 < self.keep <= 1.0:
            raise UsageError(f"keep must be in (0, 1], got {self.keep}")
        if not 0.0 <= self.heap_factor <= 1.0:
            raise UsageError(f"heap_factor must be in [0, 1], got {self.heap_factor}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--approx`` and one option per :class:`ApproxParams` knob to a search/eval parser."""
    g = parser.add_argument_group("approximate search (exact unless --approx)")
    g.add_argument("--approx", action="store_true", help="search approximately (see sparseir.search.approx)")
    for f in fields(ApproxParams):
        g.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None, metavar="N",
                       help=f"{_KNOB_HELP[f.name]} (default {f.default})")


def params_from_args(args: argparse.Namespace) -> ApproxParams | None:
    """The :class:`ApproxParams` asked for on the command line, or ``None`` for exact search."""
    if not args.approx:
        return None
    return ApproxParams(**{f.name: getattr(args, f.name) for f in fields(ApproxParams)
                           if getattr(args, f.name, None) is not None})


_KNOB_HELP = {
    "source": f"where candidates come from: {' or '.join(SOURCES)}",
    "n_postings": "postings kept per dimension",
    "block_size": "postings per block",
    "keep": "fraction of postings kept by static impact pruning (source impact)",
    "query_cut": "heaviest query dimensions traversed",
    "budget": "distinct documents touched per query, 0 = no limit",
    "candidates": "most documents re-scored exactly",
    "heap_factor": "stop re-scoring below this fraction of the k-th exact score",
}

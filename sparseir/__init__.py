"""sparseir: learned-sparse retrieval with interpretable dimensions.

    from sparseir import MLMSparseEncoder, build_index, Searcher, IndexWriter, load_corpus
    enc = MLMSparseEncoder("naver/splade-v3")
    index = build_index(load_corpus("data/scifact"), enc, "index/scifact")
    Searcher(index, enc).search("vitamin D and bone fractures", k=10)
    with IndexWriter("index/scifact") as w:   # add, update, delete; one atomic commit
        w.delete(["4983"])

Names are imported lazily, so ``import sparseir`` stays cheap.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_corpus": "corpus", "load_queries": "corpus", "load_qrels": "corpus", "Document": "corpus",
    "CorpusError": "corpus",
    "SparseEncoder": "encoders", "MLMSparseEncoder": "encoders", "LLMSparseEncoder": "encoders",
    "SAESparseEncoder": "encoders", "load_encoder": "encoders", "EncoderError": "encoders",
    "SparseirError": "errors", "UsageError": "errors", "LockError": "errors",
    "SparseIndex": "index", "IndexWriter": "index", "write_index": "index", "IndexFormatError": "index",
    "LiveIndex": "index", "open_index": "index", "MergePolicy": "index",
    "build_index": "indexing",
    "Searcher": "search", "Hit": "search", "Contribution": "search", "ApproxSearcher": "search",
    "ApproxParams": "search", "DocumentNotFoundError": "search",
    "rrf": "fusion", "convex": "fusion",
}


# Imported now (it is light): the function shares its name with its module, and a lazy lookup would
# hand back the module once ``sparseir.evaluate`` has been imported.
from .evaluate import evaluate  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'sparseir' has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, "evaluate"])

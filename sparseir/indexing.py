"""Encode a corpus chunk by chunk and write it as an index."""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .errors import UsageError
from .index.live import LiveIndex, is_index, open_index
from .index.writer import IndexWriter, encoder_info

__all__ = ["build_index", "add_documents", "encoder_info"]


def _documents(corpus: Iterable[Any]):
    from .corpus import Document

    for d in corpus:
        yield d if hasattr(d, "id") else Document(*d)


def add_documents(writer: IndexWriter, corpus: Iterable[Any], *, chunk_size: int = 4096,
                  batch_size: int | None = None, upsert: bool = False, show_progress_bar: bool = True) -> int:
    """Encode ``corpus`` (Documents or ``(id, text)`` pairs) chunk by chunk into ``writer``; returns the count."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UsageError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    try:
        total = len(corpus)  # type: ignore[arg-type]
    except TypeError:
        total = None
    docs = _documents(corpus)
    encoder = writer.encoder
    start = time.perf_counter()
    n = 0
    with tqdm(total=total, unit="doc", desc="index", disable=not show_progress_bar) as bar:
        while chunk := list(islice(docs, chunk_size)):
            vectors = encoder.encode_document([d.text for d in chunk], batch_size=batch_size, show_progress_bar=False)
            writer.add(chunk, vectors, upsert=upsert)
            n += len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(docs_per_s=f"{n / (time.perf_counter() - start):.1f}")
    return n


def build_index(corpus: Iterable[Any], encoder: Any, out: str | Path, *, quantize: str = "uint8",
                chunk_size: int = 4096, batch_size: int | None = None, overwrite: bool = False, store: bool = True,
                allow_empty: bool = False, show_progress_bar: bool = True, reorder: bool = False) -> LiveIndex:
    """Encode a corpus with ``encoder`` and write a new single-segment index to ``out``.

    ``reorder`` numbers the documents by recursive graph bisection (see :meth:`IndexWriter.optimize`).

    ``overwrite`` replaces an existing sparseir index (anything else at ``out`` is refused, and the
    old index stays readable until the new one is committed). An empty corpus is an error unless
    ``allow_empty``. Memory holds one chunk of ``chunk_size`` documents at a time.
    """
    out = Path(out)
    if is_index(out) and not overwrite:
        raise UsageError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    start = time.perf_counter()
    with IndexWriter(out, encoder, quantize=quantize, store=store, create=True, merge_policy=None) as writer:
        n = add_documents(writer, corpus, chunk_size=chunk_size, batch_size=batch_size,
                          show_progress_bar=show_progress_bar)
        if n == 0 and not allow_empty:
            raise UsageError("the corpus has no documents; pass allow_empty=True (--allow-empty) to build an empty "
                             "index")
        writer.optimize(1, reorder=reorder)
    index = open_index(out)
    seconds = time.perf_counter() - start
    index.build_info = {"n_docs": n, "seconds": round(seconds, 3),  # type: ignore[attr-defined]
                        "docs_per_second": round(n / seconds, 2) if seconds else None}
    return index

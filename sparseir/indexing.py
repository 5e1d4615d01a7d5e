"""Encode a corpus chunk by chunk and write it as an index."""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .encoders import SparseEncoder
from .index import IndexWriter, SparseIndex


def encoder_info(encoder: SparseEncoder) -> dict[str, Any]:
    """What an index records about its encoder."""
    return {"name": encoder.name, "config": encoder.config(), "fingerprint": encoder.fingerprint,
            "device": str(encoder.device)}


def build_index(corpus: Iterable[tuple[str, str]], encoder: SparseEncoder, out: str | Path, *,
                quantize: str = "uint8", chunk_size: int = 4096, batch_size: int | None = None,
                overwrite: bool = False, show_progress_bar: bool = True) -> SparseIndex:
    """Encode ``(id, text)`` pairs with ``encoder`` and write an index to ``out`` atomically.

    Memory holds one chunk of ``chunk_size`` documents at a time. Empty documents become empty
    vectors; their count is in the manifest as ``n_empty_docs``.
    """
    try:
        total = len(corpus)  # type: ignore[arg-type]
    except TypeError:
        total = None
    docs = iter(corpus)
    start = time.perf_counter()
    n = 0
    with IndexWriter(out, encoder.terms, quantize=quantize, encoder=encoder_info(encoder), overwrite=overwrite) as w, \
            tqdm(total=total, unit="doc", desc="index", disable=not show_progress_bar) as bar:
        while chunk := list(islice(docs, chunk_size)):
            ids, texts = zip(*chunk)
            w.add(ids, encoder.encode_document(list(texts), batch_size=batch_size, show_progress_bar=False))
            n += len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(docs_per_s=f"{n / (time.perf_counter() - start):.1f}")
        seconds = time.perf_counter() - start
        w.close({"encode_seconds": round(seconds, 3), "docs_per_second": round(n / seconds, 2) if seconds else None})
    return SparseIndex.load(out, verify=False)

"""The dimension browser: one dimension's posting list, document frequency and weights, read from an index.

``inspect_dimension(index, "fracture")`` lists the documents where a term (or an SAE feature) weighs
most, with titles from the document store; for an SAE index it adds the feature's label, activation
frequency and top activating texts from the SAE folder. Light on purpose (no torch, no Numba): the
CLI answers without loading a model. :func:`source_spans` (given the encoder) adds the words of each
top document that the dimension comes from.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SparseirError, UsageError

if TYPE_CHECKING:
    from ..encoders import SparseEncoder
    from ..index.live import LiveIndex

#: Quantiles of the weight distribution reported.
QUANTILES = (0.0, 0.5, 0.9, 0.99, 1.0)


class UnknownDimensionError(SparseirError, KeyError):
    """No dimension of the index has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def resolve_dimension(terms: list[str], name: str, index: Any = "", features: bool = False) -> int:
    """The dimension number of ``name``: an exact term, or with ``features`` (an SAE index) also ``f12``,
    ``12`` or a stale label ``f12:...``."""
    if not isinstance(name, str) or not name:
        raise UsageError("give a term or feature name")
    try:
        return terms.index(name)
    except ValueError:
        pass
    feature = name.split(":", 1)[0].removeprefix("f")
    if features and feature.isdigit():
        n = int(feature)
        if n < len(terms):
            return n
        raise UnknownDimensionError(f"{index}: feature {name!r} out of range: the SAE has {len(terms)} features "
                                    f"(f0..f{len(terms) - 1})")
    close = difflib.get_close_matches(name, terms, n=5, cutoff=0.75)
    hint = f"; close: {', '.join(close)}" if close else ""
    raise UnknownDimensionError(f"{index}: no dimension named {name!r} among its {len(terms)} dimensions{hint}")


def postings(index: LiveIndex, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Global positions and weights of the live documents holding ``dim`` (segment order)."""
    positions, weights = [], []
    for s, (seg, dead) in enumerate(zip(index.segments, index.dead)):
        lo, hi = int(seg.offsets[dim]), int(seg.offsets[dim + 1])
        docs, impacts = np.asarray(seg.docs[lo:hi]), np.asarray(seg.impacts[lo:hi], dtype=np.float32)
        if dead is not None:
            live = ~np.asarray(dead, dtype=bool)[docs]
            docs, impacts = docs[live], impacts[live]
        positions.append(docs.astype(np.int64) + index.bases[s])
        weights.append(impacts * np.float32(index.scale))
    return (np.concatenate(positions), np.concatenate(weights)) if positions else (np.zeros(0, np.int64),
                                                                                  np.zeros(0, np.float32))


def inspect_dimension(index: LiveIndex | str | Path, name: str, top: int = 10, bins: int = 10) -> dict[str, Any]:
    """What one dimension of ``index`` holds, as a JSON-ready dict.

    ``term``, ``dim``; ``df`` (live documents with a non-zero weight) of ``n_docs``; ``weights``
    (``quantiles`` at :data:`QUANTILES`, ``mean``, a ``histogram`` of ``bins`` equal-width bins);
    ``top``: the ``top`` heaviest documents ``{doc_id, weight, title}`` (ties: insertion order);
    ``sae`` for an SAE index: the feature's ``label``, ``frequency`` in the SAE's training data,
    ``dead`` and its top activating ``examples`` (from the SAE folder, when it is still there).
    """
    from ..index.live import open_index

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise UsageError(f"top must be an integer >= 1, got {top!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise UsageError(f"bins must be an integer >= 1, got {bins!r}")
    ix = index if not isinstance(index, (str, Path)) else open_index(index)
    terms = ix.terms
    encoder = ix.settings.get("encoder") or {}
    dim = resolve_dimension(terms, name, ix.path, features=(encoder.get("config") or {}).get("type") == "sae")
    positions, weights = postings(ix, dim)
    order = np.lexsort((positions, -weights))[:top]
    rows = []
    for p in order:
        s, local = ix.locate(int(positions[p]))
        store = ix.segments[s].store
        stored = store.get(local) if store is not None else None
        rows.append({"doc_id": ix.segments[s].doc_ids[local], "weight": float(weights[p]),
                     "title": (stored or {}).get("title", "")})
    counts, edges = np.histogram(weights, bins=bins) if len(weights) else (np.zeros(0, int), np.zeros(0))
    report: dict[str, Any] = {
        "index": str(ix.path), "term": terms[dim], "dim": dim, "df": int(len(weights)), "n_docs": ix.n_docs,
        "weights": {"quantiles": dict(zip(map(str, QUANTILES), np.quantile(weights, QUANTILES).tolist()))
                    if len(weights) else {}, "mean": float(weights.mean()) if len(weights) else 0.0,
                    "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}},
        "top": rows,
    }
    sae = sae_feature(encoder, dim)
    if sae is not None:
        report["sae"] = sae
    return report


def sae_feature(encoder: dict[str, Any], dim: int, examples: int = 8) -> dict[str, Any] | None:
    """Label, training activation frequency and top activating texts of feature ``dim`` of the SAE an index
    was built with (``None`` for another encoder)."""
    from ..sae.files import DIAGNOSTICS, LABELS, read_json

    config = encoder.get("config") or {}
    if config.get("type") != "sae":
        return None
    folder = Path(config["model"])
    labels, diagnostics = read_json(folder, LABELS), read_json(folder, DIAGNOSTICS)
    if labels is None:
        return {"folder": str(folder), "note": f"no {LABELS} in {folder} (moved or unfinished SAE)"}
    freq = diagnostics["freq"][dim] if diagnostics else None
    return {"folder": str(folder), "label": labels["labels"][dim], "label_method": labels["method"],
            "frequency": freq, "dead": freq == 0 if freq is not None else None,
            "examples": labels["examples"][dim][:examples]}


def source_spans(index: LiveIndex, encoder: SparseEncoder, report: dict[str, Any], width: int = 120) -> None:
    """Add to each top document of ``report`` the words its weight for the dimension comes from
    (``sources``: ``{token, start, end, weight}``) and a ``context`` of ``width`` characters with them in
    ``[[...]]``.

    Needs the stored text and an encoder with token provenance (a
    :class:`~sparseir.encoders.sources.ProvenanceError` otherwise).
    """
    from ..encoders.sources import ProvenanceError, highlight

    if not index.settings.get("store"):
        raise ProvenanceError(f"{index.path} keeps no document text (built with --no-store): no source words")
    for row in report["top"]:
        text = (index.doc(row["doc_id"]) or {}).get("text", "")
        sources = encoder.provenance(text).get(report["dim"], [])
        row["sources"] = [s._asdict() for s in sources]
        spans = [(s.start, s.end) for s in sources if s.start is not None]
        row["context"] = highlight(text, spans, width) if spans else ""

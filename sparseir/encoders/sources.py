"""Token provenance types: which words of a text a dimension's weight comes from (no torch here)."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import SparseirError


class Source(NamedTuple):
    """One input position behind a dimension's weight.

    ``token`` is the text at ``[start, end)`` of the original text, or the model's token (``[CLS]``)
    for a position outside the text (``start`` and ``end`` are then ``None``). ``weight`` is the
    position's share: under max pooling the pooled weight itself, under sum pooling its summand.
    """

    token: str
    start: int | None
    end: int | None
    weight: float


class ProvenanceError(SparseirError, ValueError):
    """Token provenance is not available (an encoder without token positions, a document without stored text)."""

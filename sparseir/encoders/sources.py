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


def highlight(text: str, spans: list[tuple[int, int]], width: int, marks: tuple[str, str] = ("[[", "]]")) -> str:
    """About ``width`` characters of ``text`` from a little before the first of ``spans``, each span within
    them wrapped in ``marks``, whitespace collapsed, ``…`` where text is cut."""
    spans = sorted(set(spans))
    start = max(0, spans[0][0] - width // 5) if spans else 0
    while 0 < start < spans[0][0] and not text[start - 1].isspace():
        start += 1  # begin at a word
    end, pos, parts = start + width, start, []
    for a, b in spans:
        if a >= pos and b <= end:
            parts += [text[pos:a], marks[0], text[a:b], marks[1]]
            pos = b
    parts.append(text[pos:end])
    return ("…" if start else "") + " ".join("".join(parts).split()) + ("…" if end < len(text) else "")

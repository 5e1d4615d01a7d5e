"""Bounded-memory pooling of ``log1p(relu(logits))`` over selected token positions.

The vocabulary head runs over packed rows (only the pooled positions) in chunks of at most
``max_chunk_elements`` logits, so a ``batch x seq x vocab`` tensor never exists. For max pooling,
``log1p . relu`` is monotone: the max is taken over raw logits and the activation applied once to
the pooled ``[batch, vocab]`` row.

Screened max pooling (CPUs): the head's final linear layer runs in int8 (VNNI: exact int32 sums of
quantised features and weights, reduced at once to each document's max over its tokens) or bf16;
a rigorous bound on the quantisation error marks the few vocabulary entries whose exact max logit
could be positive (about 1%, twice the final support), and only those are recomputed in float32.
Every other entry is provably ``<= 0`` and would be zeroed by the ReLU anyway, so the output equals
the float32 result (same support, values up to float32 summation order, ~1e-6).

Token provenance comes from the same pass: with ``trace=True`` the pooling also returns a
:class:`Trace`, the positions each pooled weight comes from (max: the argmax position; sum: every
position whose ``log1p(relu(logit))`` is positive, with its share).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, NamedTuple

import torch

POOLINGS = ("max", "sum")
#: bf16 keeps 8 significant bits: each rounded input is off by at most 2^-8 relatively, a product by
#: ~2^-7, the bf16 output by another 2^-8. The margins below double those for safety.
_BF16_REL = 2.0**-6
_BF16_OUT = 2.0**-7
#: Float32 rounding of the int8 screen's scales, norms and sums, covered many times over.
_MARGIN_REL, _MARGIN_ABS = 1e-5, 1e-4
#: int32 logits per int8 product (rows x vocabulary columns), small enough to stay in cache for the max.
_BLOCK_ELEMENTS = 1 << 21
#: Low-precision screens of max pooling (see the module docstring), fastest first.
SCREENS = ("int8", "bf16")


@dataclass
class VocabHead:
    """A vocabulary head split as ``decoder(transform(hidden))``; lets max pooling screen in bf16."""

    transform: Callable[[torch.Tensor], torch.Tensor]
    decoder: torch.nn.Linear

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))

    @cached_property
    def weight(self) -> torch.Tensor:
        return self.decoder.weight.detach().float()

    @cached_property
    def weight_bf16(self) -> torch.Tensor:
        return self.weight.to(torch.bfloat16)

    @cached_property
    def weight_norm(self) -> torch.Tensor:
        return self.weight.norm(dim=1)

    @cached_property
    def int8(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row int8 weights ``[h, vocab]``, their scales, and the norms ``||w - w^||`` and ``||w^||``."""
        w = self.weight.double()
        scale = w.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        q = torch.round(w / scale[:, None]).clamp_(-127, 127)
        deq = q * scale[:, None]
        return (q.to(torch.int8).T.contiguous(), scale.float(), (w - deq).norm(dim=1).float(),
                deq.norm(dim=1).float())

    @cached_property
    def bias(self) -> torch.Tensor:
        b = self.decoder.bias
        return b.detach().float() if b is not None else torch.zeros(self.weight.shape[0], device=self.weight.device)


class Trace(NamedTuple):
    """Where pooled weights come from: one entry per contributing (document, position, dimension).

    ``position`` indexes the sequence axis of the pooled input; ``weight`` is that position's
    share (max pooling: the pooled weight itself; sum pooling: the summand).
    """

    doc: torch.Tensor
    position: torch.Tensor
    dim: torch.Tensor
    weight: torch.Tensor


def max_trace(pooled: torch.Tensor, source: torch.Tensor, positions: torch.Tensor) -> Trace:
    """A :class:`Trace` of max pooling: ``source [batch, dim]`` holds the packed row of each argmax,
    ``positions [rows]`` each packed row's sequence position; entries with a zero weight are left out."""
    doc, dim = torch.nonzero(pooled > 0, as_tuple=True)
    return Trace(doc, positions[source[doc, dim]], dim, pooled[doc, dim])


def dense_trace(values: torch.Tensor, pooling: str) -> tuple[torch.Tensor, Trace]:
    """Pool a small dense ``[batch, seq, dim]`` tensor of non-negative values and trace it."""
    if pooling == "max":
        pooled, arg = values.max(1)
        doc, dim = torch.nonzero(pooled > 0, as_tuple=True)
        return pooled, Trace(doc, arg[doc, dim], dim, pooled[doc, dim])
    doc, pos, dim = torch.nonzero(values > 0, as_tuple=True)
    return values.sum(1), Trace(doc, pos, dim, values[doc, pos, dim])


def _cat_trace(parts: list[Trace]) -> Trace:
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return Trace(empty, empty, empty, torch.zeros(0))
    return Trace(*(torch.cat(xs) for xs in zip(*parts)))


def best_screen(device: torch.device) -> str | None:
    """The fastest exact screen for max pooling on ``device``: ``"int8"`` on CPUs with VNNI or AMX,
    ``"bf16"`` on CPUs whose oneDNN has native bf16 matmul, ``None`` elsewhere (a GPU runs the head whole)."""
    if device.type != "cpu":
        return None
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8")):
        return "int8"
    return "bf16" if getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)() else None


def _segments(bounds: list[int], pos: int, end: int, doc: int):
    """``(doc, start, stop)`` for the documents overlapping packed rows ``[pos, end)``."""
    start = pos
    while start < end:
        while bounds[doc] <= start:
            doc += 1
        stop = min(end, bounds[doc])
        yield doc, start, stop
        start = stop


def pool_logits(hidden: torch.Tensor, pool_mask: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                vocab: int, pooling: str, max_chunk_elements: int, screen: str | None = None,
                trace: bool = False) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """``[batch, vocab]`` pooled weights from ``hidden [batch, seq, h]`` at ``pool_mask`` positions.

    ``head`` maps ``[rows, h]`` hidden states to ``[rows, vocab]`` logits. A row with no pooled
    position gives zeros. ``screen=True`` (max pooling with a :class:`VocabHead`) uses the bf16
    screen described in the module docstring. ``trace=True`` returns ``(weights, Trace)``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if screen not in (None, *SCREENS):
        raise ValueError(f"screen must be one of {SCREENS} or None, got {screen!r}")
    if screen and pooling == "max" and isinstance(head, VocabHead):
        return _screened_max(hidden, pool_mask, head, screen, trace)
    n_docs = hidden.shape[0]
    tokens = hidden[pool_mask]  # packed rows; each document's rows are contiguous, in order
    positions = torch.nonzero(pool_mask)[:, 1]
    bounds = torch.cumsum(pool_mask.sum(1), 0).tolist()
    acc = torch.full((n_docs, vocab), -torch.inf if pooling == "max" else 0.0, device=hidden.device)
    source = torch.zeros((n_docs, vocab) if trace and pooling == "max" else (0, 0), dtype=torch.long,
                         device=hidden.device)
    parts: list[Trace] = []
    rows = max(1, max_chunk_elements // vocab)
    for pos in range(0, tokens.shape[0], rows):
        end = min(pos + rows, tokens.shape[0])
        logits = head(tokens[pos:end]).float()
        if pooling == "sum":
            logits = torch.log1p(torch.relu(logits))
        for doc, start, stop in _segments(bounds, pos, end, 0):
            part = logits[start - pos:stop - pos]
            if pooling == "max" and trace:
                best, arg = part.max(0)
                better = best > acc[doc]
                acc[doc] = torch.where(better, best, acc[doc])
                source[doc] = torch.where(better, arg + start, source[doc])
            elif pooling == "max":
                torch.maximum(acc[doc], part.amax(0), out=acc[doc])
            else:
                acc[doc] += part.sum(0)
                if trace:
                    row, dim = torch.nonzero(part, as_tuple=True)
                    parts.append(Trace(torch.full_like(row, doc), positions[row + start], dim, part[row, dim]))
    out = torch.log1p(torch.relu(acc)) if pooling == "max" else acc
    if not trace:
        return out
    return out, (max_trace(out, source, positions) if pooling == "max" else _cat_trace(parts))


def _screened_max(hidden: torch.Tensor, pool_mask: torch.Tensor, head: VocabHead, screen: str,
                  trace: bool = False) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """Max pooling through a low-precision screen and an exact float32 recompute of its survivors."""
    weight, bias = head.weight, head.bias
    vocab, n_docs = weight.shape[0], hidden.shape[0]
    feats = head.transform(hidden[pool_mask]).float()  # packed [rows, h]; each document's rows contiguous
    spans = list(itertools.pairwise([0, *torch.cumsum(pool_mask.sum(1), 0).tolist()]))
    upper = (_int8_upper if screen == "int8" else _bf16_upper)(feats, spans, head)
    out = torch.zeros(n_docs, vocab, device=hidden.device)
    source = torch.zeros((n_docs, vocab) if trace else (0, 0), dtype=torch.long, device=hidden.device)
    for doc, (start, stop) in enumerate(spans):
        if stop > start:
            cand = torch.nonzero(upper[doc] > 0).squeeze(1)
            exact, arg = (feats[start:stop] @ weight[cand].T + bias[cand]).max(0)
            out[doc, cand] = torch.log1p(torch.relu(exact))
            if trace:
                source[doc, cand] = arg + start
    return (out, max_trace(out, source, torch.nonzero(pool_mask)[:, 1])) if trace else out


def _bf16_upper(feats: torch.Tensor, spans: list[tuple[int, int]], head: VocabHead) -> torch.Tensor:
    """``[docs, vocab]`` upper bounds of ``max_t feats[t] . w_v + b_v`` over each document's rows
    ``feats[start:stop]``, from bf16 products (see ``_BF16_REL``); rows of empty documents are meaningless."""
    upper = torch.zeros(len(spans), head.weight.shape[0], device=feats.device)
    for doc, (start, stop) in enumerate(spans):
        if stop > start:
            rows = feats[start:stop]
            approx = (head.weight_bf16 @ rows.to(torch.bfloat16).T).amax(1).float()
            # Undo the output rounding (monotone), then add the input error.
            upper[doc] = torch.where(approx >= 0, approx * (1 + _BF16_OUT), approx * (1 - _BF16_OUT))
            upper[doc] += _BF16_REL * rows.norm(dim=1).max() * head.weight_norm + head.bias
    return upper


def _int8_upper(feats: torch.Tensor, spans: list[tuple[int, int]], head: VocabHead) -> torch.Tensor:
    """As :func:`_bf16_upper`, from one int8 product of all rows.

    With ``f^ = s q`` the quantised features (one scale for all rows) and ``w^`` the quantised weight
    rows, ``|f.w - f^.w^| <= ||f|| ||w - w^|| + ||f - f^|| ||w^||`` (Cauchy-Schwarz); int32 sums are exact,
    and the small float32 margins cover the rounding of the scales and norms.
    """
    q_weight, w_scale, w_err, w_norm = head.int8
    scale = feats.abs().max().clamp_min(torch.finfo(torch.float32).tiny) / 127 if len(feats) else torch.tensor(1.0)
    q = torch.round(feats / scale).clamp_(-127, 127)
    f_err, f_norm = (feats - q * scale).norm(dim=1), feats.norm(dim=1)
    q = q.to(torch.int8)
    vocab, docs = q_weight.shape[1], [(d, a, b) for d, (a, b) in enumerate(spans) if b > a]
    acc = torch.zeros(len(spans), vocab, dtype=torch.int32, device=feats.device)
    block = max(64, _BLOCK_ELEMENTS // max(1, len(feats)))
    for i in range(0, vocab, block) if docs else ():
        logits = torch._int_mm(q, q_weight[:, i:i + block])
        for doc, start, stop in docs:  # max over the document's rows commutes with the positive scale
            torch.amax(logits[start:stop], 0, out=acc[doc, i:i + block])
    approx = acc.float() * (scale * w_scale)
    slack = _span_max(f_norm, spans) * w_err + _span_max(f_err, spans) * w_norm
    return approx + slack + head.bias + _MARGIN_REL * (approx.abs() + slack) + _MARGIN_ABS


def _span_max(x: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """``[docs, 1]``: the max of ``x[start:stop]`` per span, 0 for an empty span."""
    return torch.stack([x[a:b].max() if b > a else x.new_zeros(()) for a, b in spans])[:, None]

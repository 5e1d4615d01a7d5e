"""Bounded-memory pooling of ``log1p(relu(logits))`` over selected token positions.

The vocabulary head runs over packed rows (only the pooled positions) in chunks of at most
``max_chunk_elements`` logits, so a ``batch x seq x vocab`` tensor never exists. For max pooling,
``log1p . relu`` is monotone: the max is taken over raw logits and the activation applied once to
the pooled ``[batch, vocab]`` row, which gives exactly the naive result.
"""

from __future__ import annotations

from typing import Callable

import torch

POOLINGS = ("max", "sum")


def pool_logits(hidden: torch.Tensor, pool_mask: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                vocab: int, pooling: str, max_chunk_elements: int) -> torch.Tensor:
    """``[batch, vocab]`` pooled weights from ``hidden [batch, seq, h]`` at ``pool_mask`` positions.

    ``head`` maps ``[rows, h]`` hidden states to ``[rows, vocab]`` logits. A row with no pooled
    position gives zeros.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    n_docs = hidden.shape[0]
    tokens = hidden[pool_mask]  # packed rows; each document's rows are contiguous, in order
    bounds = torch.cumsum(pool_mask.sum(1), 0).tolist()
    acc = torch.full((n_docs, vocab), -torch.inf if pooling == "max" else 0.0, device=hidden.device)
    rows = max(1, max_chunk_elements // vocab)
    doc = 0
    for pos in range(0, tokens.shape[0], rows):
        end = min(pos + rows, tokens.shape[0])
        logits = head(tokens[pos:end]).float()
        if pooling == "sum":
            logits = torch.log1p(torch.relu(logits))
        start = pos
        while start < end:  # the documents overlapping rows [pos, end)
            while bounds[doc] <= start:
                doc += 1
            stop = min(end, bounds[doc])
            part = logits[start - pos:stop - pos]
            if pooling == "max":
                torch.maximum(acc[doc], part.amax(0), out=acc[doc])
            else:
                acc[doc] += part.sum(0)
            start = stop
    return torch.log1p(torch.relu(acc)) if pooling == "max" else acc

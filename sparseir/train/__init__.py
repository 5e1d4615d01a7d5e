"""Training: MNTP adaptation of decoder-only LMs (:mod:`.mntp`) and SPLADE fine-tuning (:mod:`.splade`).

Both are imported on first use; ``sparseir llm adapt`` and ``sparseir train`` (:mod:`.cli`) drive them.
"""

from __future__ import annotations

from ..errors import SparseirError


class TrainError(SparseirError, ValueError):
    """Training input or state that cannot be used: empty data, a wrong model kind, a foreign checkpoint."""


__all__ = ["TrainError"]

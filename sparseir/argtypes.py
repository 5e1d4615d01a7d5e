"""argparse ``type`` functions for numeric options: a value out of range is an argparse error (exit code 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse ``type`` accepting a ``kind`` number >= ``low`` (argparse reports a bad one, exit code 2)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not value >= low:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def positive(text: str) -> float:
    """An argparse ``type`` for a finite number > 0."""
    value = at_least(0.0, float)(text)
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """An argparse ``type`` for a finite number >= 0."""
    value = at_least(0.0, float)(text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value

"""Sparse encoders: texts to vectors over named dimensions.

``load_encoder("mlm:naver/splade-v3")``, ``load_encoder("llm:PATH")``, ``load_encoder("sae:PATH")``,
a bare model path (the family is detected from its config), or a dict from ``encoder.config()``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from .base import EncoderError, SparseEncoder, pick_device
from .mlm import MLMSparseEncoder

#: family name -> "module:Class"; imported on first use so optional families cost nothing.
ENCODERS: dict[str, str] = {
    "mlm": "sparseir.encoders.mlm:MLMSparseEncoder",
    "llm": "sparseir.encoders.llm:LLMSparseEncoder",
    "sae": "sparseir.encoders.sae:SAESparseEncoder",
}


def encoder_class(family: str) -> type[SparseEncoder]:
    if family not in ENCODERS:
        raise EncoderError(f"unknown encoder family {family!r}; known: {', '.join(sorted(ENCODERS))}")
    module, cls = ENCODERS[family].split(":")
    return getattr(importlib.import_module(module), cls)


def _detect_family(path: str) -> str:
    p = Path(path)
    if (p / "sae_config.json").is_file():
        return "sae"
    if p.is_dir() and any(p.glob("*.gguf")):
        return "llm"
    config = p / "config.json"
    if config.is_file():
        archs = " ".join(json.loads(config.read_text()).get("architectures") or [])
        if "CausalLM" in archs:
            return "llm"
    return "mlm"


def load_encoder(spec: str | dict[str, Any], **kwargs: Any) -> SparseEncoder:
    """Build an encoder from ``"family:path"``, a bare path or id, or a ``config()`` dict."""
    if isinstance(spec, dict):
        config = dict(spec)
        family = config.pop("type")
        path = config.pop("model", None) or config.pop("path")
        return encoder_class(family)(path, **{**config, **kwargs})
    family, sep, path = spec.partition(":")
    if not sep:
        family, path = _detect_family(spec), spec
    return encoder_class(family)(path, **kwargs)


__all__ = ["ENCODERS", "EncoderError", "MLMSparseEncoder", "SparseEncoder", "encoder_class", "load_encoder",
           "pick_device"]

"""Sparse encoders: texts to vectors over named dimensions.

``load_encoder("mlm:naver/splade-v3")``, ``load_encoder("llm:PATH")``, ``load_encoder("sae:PATH")``,
a bare model path (the family is detected from its config), or a dict from ``encoder.config()``.

Importing this package is cheap: torch and transformers load with the first encoder class used.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import SparseEncoder

#: family name -> "module:Class", the one list of encoder families; imported on first use.
ENCODERS: dict[str, str] = {
    "mlm": "sparseir.encoders.mlm:MLMSparseEncoder",
    "llm": "sparseir.encoders.llm:LLMSparseEncoder",
    "sae": "sparseir.encoders.sae:SAESparseEncoder",
}
#: names importable from this package, loaded on first access
_LAZY = {"SparseEncoder": "base", "EncoderError": "base", "pick_device": "base", "Source": "sources",
         "ProvenanceError": "sources",
         **{path.rsplit(":", 1)[1]: path.split(":")[0].rsplit(".", 1)[1] for path in ENCODERS.values()}}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _error(message: str) -> Exception:
    from .base import EncoderError

    return EncoderError(message)


def encoder_class(family: str) -> type[SparseEncoder]:
    """The encoder class of ``family`` (one of :data:`ENCODERS`)."""
    if family not in ENCODERS:
        raise _error(f"unknown encoder family {family!r}; known: {', '.join(sorted(ENCODERS))}")
    module, cls = ENCODERS[family].split(":")
    return getattr(importlib.import_module(module), cls)


def split_spec(spec: str) -> tuple[str | None, str]:
    """``"family:path"`` to ``(family, path)``; a bare path or id gives ``(None, path)``."""
    family, sep, path = spec.partition(":")
    if not sep or Path(spec).exists():
        return None, spec
    if family not in ENCODERS:
        raise _error(f"unknown encoder family {family!r} in {spec!r}; known: {', '.join(sorted(ENCODERS))}")
    return family, path


def _detect_family(path: str) -> str:
    p = Path(path)
    if (p / "sae_config.json").is_file():
        return "sae"
    if p.is_dir() and any(p.glob("*.gguf")):
        return "llm"
    config = p / "config.json"
    if config.is_file():
        try:
            archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        except (ValueError, AttributeError) as e:
            raise _error(f"{config}: not a valid model config ({e})") from None
        if "CausalLM" in " ".join(map(str, archs)):
            return "llm"
    return "mlm"


def load_encoder(spec: str | dict[str, Any], **kwargs: Any) -> SparseEncoder:
    """Build an encoder from ``"family:path"``, a bare path or id, or a ``config()`` dict."""
    if isinstance(spec, dict):
        config = dict(spec)
        family = config.pop("type", None)
        # "model" since issue 10; SAE configs written before it say "path"
        path = config.pop("model", None) or config.pop("model_name_or_path", None) or config.pop("path", None)
        if family is None or path is None:
            raise _error(f"encoder config needs 'type' and 'model', got keys {sorted(spec)}")
        return encoder_class(family)(path, **{**config, **kwargs})
    family, path = split_spec(spec)
    if family is None:
        family = _detect_family(spec)
    return encoder_class(family)(path, **kwargs)


__all__ = ["ENCODERS", "encoder_class", "load_encoder", "split_spec", *_LAZY]

"""SAE dictionary encoder: texts -> base model activations -> sparse autoencoder features.

Embedding-source SAEs encode one sentence embedding per text; hidden-state SAEs encode every
token and pool the feature activations over the text (max by default). Dimension names are
the SAE's feature labels. Token provenance: a hidden-state SAE's feature comes from the token
positions the pooling picks; an embedding-source SAE's features have no source tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sparseir.encoders.base import EncoderError, SparseEncoder, Tokens, module_fingerprint, position_limit
from sparseir.encoders.pooling import Trace, dense_trace
from sparseir.encoders.sources import ProvenanceError
from sparseir.sae.checkpoint import DIAGNOSTICS, LABELS, load_sae, read_json
from sparseir.sae.collect import EmbeddingSource, HiddenStateSource

POOLINGS = ("max", "sum")


class SAESparseEncoder(SparseEncoder):
    """Encode texts into the feature space of a trained SAE checkpoint directory.

    ``k`` overrides the SAE's number of active features per input (per token for hidden
    sources); ``normalize`` L2-normalises each sparse vector (cosine scoring); ``base_model``
    overrides the base model path recorded in the checkpoint.
    """

    name = "sae"

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        k: int | None = None,
        normalize: bool = False,
        pooling: str = "max",
        max_length: int | None = None,
        query_max_length: int | None = None,
        base_model: str | None = None,
        max_active_dims: int | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, max_active_dims=max_active_dims, device=device)
        if pooling not in POOLINGS:
            raise EncoderError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self._check_max_length(max_length, None, "--max-length")
        self._check_max_length(query_max_length, None, "--query-max-length")
        self.path = Path(model_name_or_path)
        self.model_name_or_path = str(self.path)
        try:
            self.sae, self.sae_config = load_sae(self.path, self.device)
        except (FileNotFoundError, ValueError) as e:
            raise EncoderError(str(e)) from e
        if k is not None and not 0 < k <= self.sae.cfg.n_latents:
            raise EncoderError(f"k must be in [1, {self.sae.cfg.n_latents}], got {k}")
        self.k = k
        self.normalize = normalize
        self.pooling = pooling
        self.max_length = max_length
        self.query_max_length = query_max_length
        source = self.sae_config["source"]
        self.model_path = base_model or source["model"]
        if source["kind"] == "embedding":
            self.source = EmbeddingSource(self.model_path, device=self.device)
        elif source["kind"] == "hidden":
            self.source = HiddenStateSource(
                self.model_path,
                layer=source["layer"],
                max_length=max_length or source["max_length"],
                device=self.device,
            )
        else:
            raise EncoderError(f"{self.path}: unknown activation source kind {source['kind']!r}")
        if source["kind"] == "hidden":
            limit = position_limit(self.source.model, self.source.tokenizer)
            self._check_max_length(max_length, limit, "--max-length")
            self._check_max_length(query_max_length, limit, "--query-max-length")
        if self.source.dim != self.sae.cfg.d_in:
            raise EncoderError(
                f"{self.model_path} gives {self.source.dim}-d activations, the SAE expects {self.sae.cfg.d_in}"
            )
        labels = read_json(self.path, LABELS)
        n = self.sae.cfg.n_latents
        self._terms = list(labels["labels"]) if labels else [f"f{i}" for i in range(n)]
        if len(self._terms) != n:
            raise EncoderError(f"{self.path}/{LABELS} has {len(self._terms)} labels for {n} features")

    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        return self._codes(texts, is_query)

    def _codes(self, texts: list[str], is_query: bool, trace: bool = False) -> Any:
        if isinstance(self.source, EmbeddingSource):
            if trace:
                raise ProvenanceError(f"{self.path}: this SAE reads one sentence embedding per text, so its features "
                                      "have no source tokens (only hidden-state SAEs point at words)")
            codes = self.sae.encode(self.source.embed(texts, batch_size=len(texts)), self.k)
        else:
            self.source.max_length = self._max_length(is_query)
            hidden, mask, _, _ = self.source.states(texts)
            tok = torch.zeros(*mask.shape, self.sae.cfg.n_latents, device=hidden.device)
            tok[mask] = self.sae.encode(hidden[mask].float(), self.k)
            codes, sources = dense_trace(tok, self.pooling) if trace else (tok.amax(1) if self.pooling == "max"
                                                                              else tok.sum(1), None)
        if self.normalize:
            norm = codes.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            codes = codes / norm
            if trace:
                sources = sources._replace(weight=sources.weight / norm[sources.doc, 0])
        return (codes, sources) if trace else codes

    def _max_length(self, is_query: bool) -> int:
        if is_query and self.query_max_length:
            return self.query_max_length
        return self.max_length or self.sae_config["source"]["max_length"]

    def _trace(self, text: str, is_query: bool) -> tuple[torch.Tensor, Trace, Tokens]:
        codes, sources = self._codes([text], is_query, trace=True)
        ids, spans = self.source.offsets(text)
        names = self.source.tokenizer.convert_ids_to_tokens(ids)
        return codes[0], sources, [(name, (s, e) if e > s else None) for name, (s, e) in zip(names, spans)]

    @property
    def health(self) -> dict[str, Any] | None:
        """The SAE's ``diagnostics.json`` without the per-latent frequencies: FVU, L0, dead and dense latents
        (with the window they were counted over), the log10 activation-frequency histogram."""
        diagnostics = read_json(self.path, DIAGNOSTICS)
        return {k: v for k, v in diagnostics.items() if k != "freq"} if diagnostics else None

    def config(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "model": self.model_name_or_path,
            "k": self.k,
            "normalize": self.normalize,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_max_length": self.query_max_length,
            "base_model": None if self.model_path == self.sae_config["source"]["model"] else self.model_path,
            "max_active_dims": self.max_active_dims,
            "batch_size": self.batch_size,
        }

    @property
    def fingerprint(self) -> str:
        return module_fingerprint(self.sae, self.source.model)

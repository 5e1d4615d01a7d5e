"""Activation sources: (a) token hidden states of a transformer layer, (b) sentence-transformers embeddings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseir.encoders.base import pick_device
from sparseir.encoders.mlm import load_pretrained, loading
from sparseir.errors import UsageError
from sparseir.sae.store import MEAN_POOLED, StoreWriter

SOURCE_KINDS = ("hidden", "embedding")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str, min_chars: int = 20) -> list[str]:
    """Split text at sentence ends; fragments shorter than ``min_chars`` are dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= min_chars]


class EmbeddingSource:
    """Source (b): one normalised sentence-transformers embedding per text."""

    kind = "embedding"

    def __init__(self, model: str, *, device: str | torch.device | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_path = str(model)
        self.device = pick_device(device)
        with loading(self.model_path, "a sentence-transformers model"):
            self.model = SentenceTransformer(self.model_path, device=str(self.device))
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())

    def meta(self) -> dict:
        """Source description stored with activations and SAEs."""
        return {"kind": self.kind, "model": self.model_path}

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Unit-norm embeddings [len(texts), dim] (float32, on the source's device)."""
        return self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        ).float()


class HiddenStateSource:
    """Source (a): per-token hidden states of layer ``layer`` (0 = embeddings, -1 = last)."""

    kind = "hidden"

    def __init__(
        self, model: str, *, layer: int = -1, max_length: int = 256, device: str | torch.device | None = None
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_path = str(model)
        self.device = pick_device(device)
        self.tokenizer = load_pretrained(AutoTokenizer, self.model_path, "a tokenizer")
        self.model = load_pretrained(AutoModel, self.model_path, "a model").to(self.device).eval()
        n_layers = int(self.model.config.num_hidden_layers)
        if not -(n_layers + 1) <= layer <= n_layers:
            raise UsageError(f"layer must be in [{-(n_layers + 1)}, {n_layers}] for {self.model_path}, got {layer}")
        self.layer = layer % (n_layers + 1)
        self.n_layers = n_layers
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def meta(self) -> dict:
        """Source description stored with activations and SAEs."""
        return {
            "kind": self.kind,
            "model": self.model_path,
            "layer": self.layer,
            "n_layers": self.n_layers,
            "max_length": self.max_length,
        }

    def tokenize(self, texts: Sequence[str]) -> dict:
        """Padded, truncated model inputs."""
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        ).to(self.device)

    @torch.inference_mode()
    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hidden [B, T, d], mask [B, T] of real non-special tokens, input_ids [B, T], mean [B, d])``.

        ``mean`` is the unit-norm mean of the layer over all attended tokens (special ones
        included): for the last layer of a mean-pooling sentence-transformers model, its embedding.
        """
        enc = self.tokenize(texts)
        special = enc.pop("special_tokens_mask").bool()
        out = self.model(**enc, output_hidden_states=True)
        ids = enc["input_ids"]
        attn = enc["attention_mask"].bool()
        hidden = out.hidden_states[self.layer].float()
        mean = (hidden * attn[..., None]).sum(1) / attn.sum(1, keepdim=True).clamp_min(1)
        return hidden, attn & ~special, ids, torch.nn.functional.normalize(mean, dim=-1)

    def offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character spans of one text as :meth:`tokenize` cuts it (``(0, 0)`` for special tokens)."""
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(span) for span in enc["offset_mapping"]]

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Non-special tokens per text after truncation."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, return_special_tokens_mask=True)
        return np.array([len(m) - sum(m) for m in enc["special_tokens_mask"]], dtype=np.int64)


def collect_embeddings(
    source: EmbeddingSource,
    records: Sequence[dict],
    out: str | Path,
    *,
    batch_size: int = 64,
    block: int = 4096,
    dtype: str = "float16",
    extra_meta: dict | None = None,
) -> Path:
    """Embed ``records`` (dicts with ``id``, ``text``, optional ``kind``) into a store at ``out``."""
    if not records:
        raise UsageError("no texts to embed")
    meta = {**source.meta(), **(extra_meta or {})}
    with StoreWriter(out, len(records), source.dim, meta, dtype=dtype) as w:
        w.texts = list(records)
        w.row_text[:] = np.arange(len(records))
        for s in tqdm(range(0, len(records), block), desc="embed", unit="block"):
            texts = [r["text"] for r in records[s : s + block]]
            w.acts[s : s + len(texts)] = source.embed(texts, batch_size).cpu().numpy()
    return Path(out)


def collect_hidden(
    source: HiddenStateSource,
    records: Sequence[dict],
    out: str | Path,
    *,
    batch_size: int = 16,
    dtype: str = "float16",
    extra_meta: dict | None = None,
) -> Path:
    """Write every non-special token's hidden state of ``records`` into a store at ``out``.

    Rows of one text are contiguous and in token order; ``token_ids.npy`` and
    ``row_text.npy`` give each row's token and text, for labels and snippets.
    ``mean_pooled.npy`` holds each text's unit-norm mean-pooled layer state (see
    :meth:`HiddenStateSource.states`), so one pass also yields sentence embeddings.
    """
    if not records:
        raise UsageError("no texts to encode")
    texts = [r["text"] for r in records]
    counts = source.count_tokens(texts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if offsets[-1] == 0:
        raise UsageError("the texts hold no tokens")
    meta = {**source.meta(), **(extra_meta or {})}
    order = np.argsort([len(t) for t in texts], kind="stable")
    with StoreWriter(out, int(offsets[-1]), source.dim, meta, dtype=dtype, with_tokens=True) as w:
        w.texts = list(records)
        w.row_text[:] = np.repeat(np.arange(len(texts)), counts)
        w.extra[MEAN_POOLED] = pooled = np.zeros((len(texts), source.dim), dtype=np.float32)
        for s in tqdm(range(0, len(order), batch_size), desc="hidden states", unit="batch"):
            idx = order[s : s + batch_size]
            hidden, mask, ids, mean = source.states([texts[i] for i in idx])
            pooled[idx] = mean.cpu().numpy()
            for b, i in enumerate(idx):
                m = mask[b]
                n = int(m.sum())
                if n != counts[i]:
                    raise RuntimeError(f"token count mismatch for text {i}: {n} != {counts[i]}")
                w.acts[offsets[i] : offsets[i] + n] = hidden[b][m].cpu().numpy()
                w.token_ids[offsets[i] : offsets[i] + n] = ids[b][m].cpu().numpy()
    return Path(out)


def corpus_records(
    corpus: str,
    *,
    queries: str | None = None,
    sentences: bool = False,
    limit: int | None = None,
) -> list[dict]:
    """Texts to collect from: corpus documents, optionally their sentences and some queries.

    Record ids are the document id (``kind`` "doc"), ``docid#n`` for sentences and
    ``q:qid`` for queries.
    """
    from sparseir.corpus import load_corpus, load_queries

    records: list[dict] = []
    for i, doc in enumerate(load_corpus(corpus)):
        if limit is not None and i >= limit:
            break
        if doc.text.strip():
            records.append({"id": doc.id, "text": doc.text, "kind": "doc"})
    if sentences:
        for r in list(records):
            parts = split_sentences(r["text"])
            if len(parts) > 1:
                records.extend({"id": f"{r['id']}#{j}", "text": s, "kind": "sentence"} for j, s in enumerate(parts))
    if queries:
        records.extend({"id": f"q:{qid}", "text": q, "kind": "query"} for qid, q in load_queries(queries).items())
    return records

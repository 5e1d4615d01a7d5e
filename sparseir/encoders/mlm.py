"""SPLADE-style encoder over any ``AutoModelForMaskedLM``.

``w = pool_t log(1 + ReLU(logits[t]))`` over non-padding tokens, in vocabulary space.

Memory stays bounded: the MLM head runs over packed (non-padding) token rows in chunks of at most
``max_chunk_elements`` logits, never a full ``batch x seq x vocab`` tensor. For max pooling,
``log1p . ReLU`` is monotone, so the max is taken over raw logits and the activation is applied
once to the pooled row; the result equals the naive formula (see :func:`naive_encode`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import EncoderError, SparseEncoder, Tokens, module_fingerprint, position_limit
from .pooling import POOLINGS, SCREENS, Trace, VocabHead, best_screen, dense_trace, pool_logits

#: Characters kept per allowed token before tokenising, so a huge document costs no more than a long one.
CHARS_PER_TOKEN = 64
#: A batch runs in groups of similar token counts: padding at most this share of a group's tokens, once
#: the group holds ``GROUP_MIN_TOKENS`` (smaller groups would pay more in per-call overhead than padding).
GROUP_WASTE, GROUP_MIN_TOKENS = 0.1, 512


def resolve_model_path(name_or_path: str) -> str:
    """Absolute path for a local folder, the hub id unchanged otherwise."""
    p = Path(name_or_path).expanduser()
    return str(p.resolve()) if p.exists() else name_or_path


@contextmanager
def loading(name_or_path: str, what: str) -> Iterator[None]:
    """Turn a loader's ``OSError``/``ValueError`` for an unknown path or id into a clear :class:`EncoderError`."""
    try:
        yield
    except (OSError, ValueError) as e:
        raise EncoderError(
            f"cannot load {what} from {name_or_path!r}: not a model folder, and not a model id "
            f"reachable on the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e


def load_pretrained(loader: Callable[..., Any], name_or_path: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with a clear error for an unknown path or id."""
    with loading(name_or_path, what):
        return loader.from_pretrained(name_or_path, **kwargs)


def _split_head(model: PreTrainedModel) -> VocabHead | None:
    """The MLM head as ``decoder(transform(hidden))`` for the common architectures."""
    if hasattr(model, "cls"):  # BERT and relatives
        p = model.cls.predictions
        return VocabHead(p.transform, p.decoder)
    if hasattr(model, "lm_head") and hasattr(model.lm_head, "layer_norm"):  # RoBERTa, XLM-R, CamemBERT
        h = model.lm_head
        return VocabHead(lambda x: h.layer_norm(torch.nn.functional.gelu(h.dense(x))), h.decoder)
    if hasattr(model, "vocab_projector"):  # DistilBERT
        return VocabHead(lambda x: model.vocab_layer_norm(model.activation(model.vocab_transform(x))),
                         model.vocab_projector)
    return None


class MLMSparseEncoder(SparseEncoder):
    """SPLADE encoder: any masked-LM id or path, with an optional separate query model."""

    name = "mlm"

    def __init__(self, model_name_or_path: str, *, query_model: str | None = None, max_length: int = 256,
                 query_max_length: int = 64, pooling: str = "max", max_active_dims: int | None = None,
                 batch_size: int = 32, device: str | torch.device | None = None,
                 max_chunk_elements: int = 1 << 23, screen: str | bool | None = None) -> None:
        super().__init__(batch_size=batch_size, max_active_dims=max_active_dims, device=device)
        if pooling not in POOLINGS:
            raise EncoderError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model_name_or_path = resolve_model_path(str(model_name_or_path))
        self.query_model_name_or_path = resolve_model_path(str(query_model)) if query_model else None
        self.pooling = pooling
        self.max_chunk_elements = max_chunk_elements
        if screen not in (None, True, False, *SCREENS):
            raise EncoderError(f"screen must be one of {SCREENS}, True (the fastest here) or False, got {screen!r}")
        self.screen = best_screen(self.device) if screen in (None, True) else (screen or None)
        self.tokenizer, self.model = self._load(self.model_name_or_path)
        if self.query_model_name_or_path:
            self.query_tokenizer, self.query_model = self._load(self.query_model_name_or_path)
        else:
            self.query_tokenizer, self.query_model = self.tokenizer, self.model
        self.max_length = self._check_max_length(max_length, position_limit(self.model, self.tokenizer),
                                                 "--max-length")
        self.query_max_length = self._check_max_length(
            query_max_length, position_limit(self.query_model, self.query_tokenizer), "--query-max-length")
        self._heads = {id(m): _split_head(m) for m in (self.model, self.query_model)}
        vocab = self.model.config.vocab_size
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(self.tokenizer)))))
        self._terms = [t if t is not None else f"[{i}]" for i, t in enumerate(tokens)]
        self._terms += [f"[{i}]" for i in range(len(self._terms), vocab)]
        # Special tokens and ids beyond the tokenizer never appear in outputs.
        self._excluded = torch.tensor(sorted(set(self.tokenizer.all_special_ids) | set(range(len(tokens), vocab))),
                                      dtype=torch.long, device=self.device)
        self._fingerprint: str | None = None

    def _load(self, path: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
        tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer")
        model = load_pretrained(AutoModelForMaskedLM, path, "masked-LM model")
        return tokenizer, model.to(self.device).eval()

    def config(self) -> dict[str, Any]:
        return {"type": self.name, "model": self.model_name_or_path, "query_model": self.query_model_name_or_path,
                "max_length": self.max_length, "query_max_length": self.query_max_length,
                "pooling": self.pooling, "max_active_dims": self.max_active_dims}

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            models = [self.model] + ([self.query_model] if self.query_model is not self.model else [])
            self._fingerprint = module_fingerprint(*models)
        return self._fingerprint

    def _batch(self, texts: list[str], is_query: bool, offsets: bool = False) -> Any:
        """Tokenised, padded inputs (with each token's character span when ``offsets``)."""
        tokenizer = self.query_tokenizer if is_query else self.tokenizer
        max_length = self.query_max_length if is_query else self.max_length
        texts = [t[: max_length * CHARS_PER_TOKEN] for t in texts]
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                         return_offsets_mapping=offsets)

    def _weights(self, batch: Any, is_query: bool, trace: bool = False) -> Any:
        model = self.query_model if is_query else self.model
        out = pooled_mlm_weights(model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                                 self.pooling, self.max_chunk_elements, self._heads[id(model)], self.screen, trace)
        (out[0] if trace else out)[:, self._excluded] = 0
        return out

    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        """Texts arrive sorted by characters; they run in groups of similar token counts, each padded on its own."""
        batch = self._batch(texts, is_query)
        lengths = batch["attention_mask"].sum(1)
        if (self.query_tokenizer if is_query else self.tokenizer).padding_side != "right":
            return self._weights(batch, is_query)
        order = torch.argsort(lengths, descending=True, stable=True)
        out = torch.empty(len(texts), self.dim, device=self.device)
        for group in length_groups(lengths[order].tolist()):
            idx = order[group]
            width = int(lengths[idx[0]])
            out[idx] = self._weights({k: batch[k][idx, :width] for k in ("input_ids", "attention_mask")}, is_query)
        return out

    def _trace(self, text: str, is_query: bool) -> tuple[torch.Tensor, Trace, Tokens]:
        batch = self._batch([text], is_query, offsets=True)
        weights, trace = self._weights(batch, is_query, trace=True)
        tokenizer = self.query_tokenizer if is_query else self.tokenizer
        names = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
        tokens = [(name, (s, e) if e > s else None) for name, (s, e) in zip(names, batch["offset_mapping"][0].tolist())]
        return weights[0], trace, tokens


def length_groups(lengths: list[int], waste: float = GROUP_WASTE, min_tokens: int = GROUP_MIN_TOKENS) -> list[slice]:
    """Split descending ``lengths`` into runs padded to their first length: a run closes once it holds
    ``min_tokens`` tokens and the next text would take its padding above ``waste`` of its tokens."""
    groups, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if total >= min_tokens and lengths[start] * (i - start + 1) > (1 + waste) * (total + n):
            groups.append(slice(start, i))
            start, total = i, 0
        total += n
    return groups + [slice(start, len(lengths))] if lengths else groups


def pooled_mlm_weights(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       pooling: str, max_chunk_elements: int, head: VocabHead | None = None,
                       screen: str | None = None, trace: bool = False) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """``pool_t log1p(relu(logits))`` over non-padding tokens, with bounded logits memory.

    ``head`` is ``model``'s split MLM head; models with an unknown head (``None``) run whole,
    a few documents at a time. ``trace=True`` also returns the pooling's :class:`~.pooling.Trace`.
    """
    if head is None:  # unknown head: run the whole model on as many documents as fit the budget
        if trace:
            return dense_trace(_logit_weights(model, input_ids, attention_mask), pooling)
        step = max(1, max_chunk_elements // (input_ids.shape[1] * model.config.vocab_size))
        parts = [_pool_full(model, input_ids[i:i + step], attention_mask[i:i + step], pooling)
                 for i in range(0, input_ids.shape[0], step)]
        return torch.cat(parts)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
    return pool_logits(hidden, attention_mask.bool(), head, model.config.vocab_size, pooling, max_chunk_elements,
                       screen, trace)


def _logit_weights(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``log1p(relu(logits))`` of every position, zero at padding: ``[batch, seq, vocab]``."""
    w = torch.log1p(torch.relu(model(input_ids=input_ids, attention_mask=attention_mask).logits.float()))
    return w * attention_mask.unsqueeze(-1)


def _pool_full(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               pooling: str) -> torch.Tensor:
    w = _logit_weights(model, input_ids, attention_mask)
    return w.amax(1) if pooling == "max" else w.sum(1)


@torch.inference_mode()
def naive_encode(encoder: MLMSparseEncoder, texts: list[str], is_query: bool = False) -> torch.Tensor:
    """The textbook SPLADE formula on full ``batch x seq x vocab`` logits, in input order.

    A reference for tests and benchmarks; it materialises every logit.
    """
    tokenizer, model = (encoder.query_tokenizer, encoder.query_model) if is_query else (encoder.tokenizer, encoder.model)
    max_length = encoder.query_max_length if is_query else encoder.max_length
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(encoder.device)
    out = _pool_full(model, batch["input_ids"], batch["attention_mask"], encoder.pooling)
    out[:, encoder._excluded] = 0
    return out

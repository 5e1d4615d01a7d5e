"""Sparse vectors in vocabulary space from a decoder-only (causal) language model, without training.

The next-token logits of a causal LM are an importance distribution over its vocabulary.
``w = pool_t log(1 + ReLU(s[t]))`` over a mode's positions, where the score ``s`` is either the raw
``logits`` or ``logprob``, ``log p(v) + log |V|``: how much likelier than uniform the token is. Raw
logits of a causal LM are positive for almost every token (vectors with ~97% of the vocabulary
active); log-probabilities relative to uniform keep only the tokens the model actually expects.

* ``plain``: the text's own positions (template ``"{text}"`` by default).
* ``echo``: the text is given twice; only the second copy's positions are pooled, so each of them
  has seen the whole text (Springer et al. 2024, "Repeating Input Texts for Improved LLM Text
  Embeddings").
* ``prompt``: PromptReps-style; the last position of an instruction that asks for one word
  representing the text. By default only the vocabulary ids of the text's own words are kept
  (``restrict_to_input``), as in PromptReps, which makes the single-position vector sparse.

Templates hold one or more ``{text}`` placeholders (other braces are literal). Each template piece
and the text are tokenised apart and concatenated, so the pooled positions are known exactly;
a single space right before ``{text}`` is folded into the text's tokens (``" word"``, as the model
saw in pre-training). Batches are right-padded: under causal attention the real positions never
see the padding, so a batch gives the same vectors as one text at a time.

Memory stays bounded as in :mod:`.mlm`: the LM head runs over the packed pooled rows only, in
chunks of at most ``max_chunk_elements`` logits (see :func:`.pooling.pool_logits`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import EncoderError, SparseEncoder, module_fingerprint
from .mlm import CHARS_PER_TOKEN, load_pretrained, resolve_model_path
from .pooling import POOLINGS, pool_logits

MODES = ("plain", "echo", "prompt")
SCORES = ("logits", "logprob")
PLACEHOLDER = "{text}"

#: Default ``(document, query)`` templates per mode.
TEMPLATES: dict[str, tuple[str, str]] = {
    "plain": ("{text}", "{text}"),
    "echo": ('Passage: "{text}"\nRepeat the passage: "{text}"',
             'Query: "{text}"\nRepeat the query: "{text}"'),
    "prompt": ('Passage: "{text}". Use one word to represent the passage in a retrieval task. '
               'Make sure your word is in lowercase.\nThe word is: "',
               'Query: "{text}". Use one word to represent the query in a retrieval task. '
               'Make sure your word is in lowercase.\nThe word is: "'),
}

_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable character -> byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _readable(token: str, text: str) -> str:
    """A token's display string: decoded, whitespace stripped; byte fragments as ``<0xNN>``."""
    if "\ufffd" in text and token and all(ch in _byte_decoder() for ch in token):
        return "".join(f"<0x{_byte_decoder()[ch]:02X}>" for ch in token)
    stripped = text.strip()
    return stripped if stripped else text.encode("unicode_escape").decode().replace(" ", "␣")


def _is_noise(text: str) -> bool:
    """Pure whitespace, punctuation or symbols (``"Ġ"``, ``"ĊĊ"``, ``"."``, ``"),"``, ``"=="``).

    A lone byte of a multi-byte UTF-8 character decodes to U+FFFD, a symbol, so it counts too: on
    its own it is no readable term (a limitation for scripts the vocabulary spells byte by byte).
    """
    return all(ch.isspace() or unicodedata.category(ch)[0] in "PS" for ch in text)


def vocabulary_terms(tokenizer: PreTrainedTokenizerBase, vocab: int) -> tuple[list[str], list[int], list[int]]:
    """Unique readable names for ``vocab`` ids, the special ids, and the whitespace/punctuation ids.

    A word-initial token (``"Ġbone"``) is named by its word (``"bone"``); a token that decodes to
    the same word without the leading space (``"bone"`` inside a word) becomes ``"##bone"``;
    byte fragments of a UTF-8 character read ``"<0xC3>"``; pure-whitespace tokens are escaped
    (``"\\n\\n"``, ``"␣␣"``). Any remaining collision gets the id as a suffix (``"word#123"``).
    Ids beyond the tokenizer are named ``"[id]"`` and reported as special.
    """
    n = min(vocab, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    special |= set(range(n, vocab))
    texts = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in tokens]
    base = [_readable(t or "", s) if i not in special else (t or f"[{i}]")
            for i, (t, s) in enumerate(zip(tokens, texts))]
    word_start = [bool(t) and (t[0] in "Ġ▁" or s[:1].isspace()) for t, s in zip(tokens, texts)]
    starts = {b for b, w, i in zip(base, word_start, range(n)) if w and i not in special}
    taken: set[str] = set()
    # Word-initial tokens choose first, so "bone" names "Ġbone" whatever the id order.
    order = sorted(range(n), key=lambda i: (not word_start[i], i))
    chosen: dict[int, str] = {}
    for i in order:
        name = base[i]
        if i not in special and not word_start[i] and name in starts:
            name = "##" + name
        if name in taken:
            name = f"{name}#{i}"
        taken.add(name)
        chosen[i] = name
    names = [chosen[i] for i in range(n)] + [f"[{i}]" for i in range(n, vocab)]
    noise = [i for i in range(n) if i not in special and _is_noise(texts[i])]
    return names, sorted(special), noise


def _split_template(template: str, mode: str) -> list[str]:
    """Literal pieces around the ``{text}`` placeholders, checked against ``mode``."""
    pieces = template.split(PLACEHOLDER)
    copies = len(pieces) - 1
    if mode == "echo" and copies < 2:
        raise EncoderError(f"an echo template needs {PLACEHOLDER} at least twice, got {template!r}")
    if mode != "echo" and copies != 1:
        raise EncoderError(f"a {mode} template needs {PLACEHOLDER} exactly once, got {template!r}")
    return pieces


def find_gguf(path: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``(folder or id, gguf file name)``: a ``.gguf`` path, or the only ``.gguf`` in a folder."""
    p = Path(path)
    if gguf_file is not None:
        return path, gguf_file
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), p.name
    found = sorted(f.name for f in p.glob("*.gguf")) if p.is_dir() else []
    if len(found) > 1:
        raise EncoderError(f"{path} holds several .gguf files ({', '.join(found)}); pass gguf_file=")
    return path, (found[0] if found else None)


def lm_head(model: PreTrainedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """Last hidden states to logits: the output embeddings, plus the model's logit scaling or capping."""
    head = model.get_output_embeddings()
    if head is None:
        raise EncoderError(f"{type(model).__name__} has no output embeddings (LM head)")
    scale = getattr(model.config, "logits_scaling", None)
    cap = getattr(model.config, "final_logit_softcapping", None)

    def apply(h: torch.Tensor) -> torch.Tensor:
        logits = head(h)
        if scale:
            logits = logits / scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return apply


@lru_cache(maxsize=2)
def _load(path: str, gguf_file: str | None, device: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel,
                                                                  list[str], list[int], list[int]]:
    """Tokenizer, eval-mode model (bf16 on CUDA) and vocabulary names; cached, so encoder variants
    over one checkpoint (modes, templates, masks) share a single copy of the weights."""
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer", **extra)
    model = load_pretrained(AutoModelForCausalLM, path, "causal-LM model", **extra)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        model = model.to(dtype=torch.bfloat16)
    model = model.to(device).eval()
    return (tokenizer, model, *vocabulary_terms(tokenizer, model.config.vocab_size))


class LLMSparseEncoder(SparseEncoder):
    """Vocabulary-space sparse vectors from any ``AutoModelForCausalLM`` id, folder or GGUF checkpoint.

    ``mode`` is ``"plain"``, ``"echo"`` or ``"prompt"`` (the default: by far the best retriever of the
    three on SciFact, see ``bench/results/llm.md``); ``doc_template``/``query_template``
    override its defaults (:data:`TEMPLATES`). ``mask`` zeroes special, pure-whitespace and
    pure-punctuation tokens. ``score`` is ``"logits"`` or ``"logprob"`` (see the module docstring).
    ``restrict_to_input`` keeps only the ids of the text's own words
    (default: on for ``prompt``, off otherwise). ``max_length`` bounds each copy of the text.
    """

    name = "llm"

    def __init__(self, model_name_or_path: str, *, gguf_file: str | None = None, mode: str = "prompt",
                 doc_template: str | None = None, query_template: str | None = None, mask: bool = True,
                 score: str = "logprob",
                 restrict_to_input: bool | None = None, max_length: int = 256, query_max_length: int = 64,
                 pooling: str = "max", max_active_dims: int | None = None, batch_size: int = 16,
                 device: str | torch.device | None = None, max_chunk_elements: int = 1 << 23) -> None:
        super().__init__(batch_size=batch_size, max_active_dims=max_active_dims, device=device)
        if mode not in MODES:
            raise EncoderError(f"mode must be one of {MODES}, got {mode!r}")
        if pooling not in POOLINGS:
            raise EncoderError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if score not in SCORES:
            raise EncoderError(f"score must be one of {SCORES}, got {score!r}")
        if max_length < 1 or query_max_length < 1:
            raise EncoderError("max_length and query_max_length must be >= 1")
        self.mode, self.pooling, self.mask, self.score = mode, pooling, bool(mask), score
        self.doc_template = doc_template if doc_template is not None else TEMPLATES[mode][0]
        self.query_template = query_template if query_template is not None else TEMPLATES[mode][1]
        self._pieces = {False: _split_template(self.doc_template, mode),
                        True: _split_template(self.query_template, mode)}
        self.restrict_to_input = (mode == "prompt") if restrict_to_input is None else bool(restrict_to_input)
        self.max_length, self.query_max_length = max_length, query_max_length
        self.max_chunk_elements = max_chunk_elements
        path, self.gguf_file = find_gguf(resolve_model_path(str(model_name_or_path)), gguf_file)
        self.model_name_or_path = path
        loaded = _load(path, self.gguf_file, str(self.device))
        self.tokenizer, self.model, self._terms, self.special_ids, self.noise_ids = loaded
        self.vocab = self.model.config.vocab_size
        excluded = set(range(len(self.tokenizer), self.vocab))
        if self.mask:
            excluded |= set(self.special_ids) | set(self.noise_ids)
        self._excluded = torch.tensor(sorted(excluded), dtype=torch.long, device=self.device)
        self._head = lm_head(self.model)
        self._prefix = self._special_prefix()
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._piece_ids: dict[tuple[bool, int], list[int]] = {}
        self._fingerprint: str | None = None

    def _special_prefix(self) -> list[int]:
        """The special ids the tokenizer puts before a text (a BOS token, for many models)."""
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if full[i:i + len(plain)] == plain:
                return full[:i]
        return []

    def config(self) -> dict[str, Any]:
        return {"type": self.name, "model": self.model_name_or_path, "gguf_file": self.gguf_file, "mode": self.mode,
                "doc_template": self.doc_template, "query_template": self.query_template, "score": self.score,
                "mask": self.mask, "restrict_to_input": self.restrict_to_input, "max_length": self.max_length,
                "query_max_length": self.query_max_length, "pooling": self.pooling,
                "max_active_dims": self.max_active_dims}

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.model)
        return self._fingerprint

    # --- inputs ------------------------------------------------------------------------
    def _pieces_for(self, is_query: bool) -> tuple[list[list[int]], bool]:
        """Token ids of each literal piece, and whether the text takes a leading space."""
        pieces = self._pieces[is_query]
        # A single space before the placeholders goes with the text, as in running text.
        lead = pieces[-2].endswith(" ")
        ids = []
        for j, piece in enumerate(pieces):
            if lead and j < len(pieces) - 1 and piece.endswith(" "):
                piece = piece[:-1]
            key = (is_query, j)
            if key not in self._piece_ids:
                self._piece_ids[key] = self.tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids.append(self._piece_ids[key])
        return ids, lead

    def build_inputs(self, texts: list[str], is_query: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and the mode's ``pool_mask``, all ``[batch, seq]``."""
        max_length = self.query_max_length if is_query else self.max_length
        pieces, lead = self._pieces_for(is_query)
        texts = [(" " if lead else "") + t[: max_length * CHARS_PER_TOKEN] for t in texts]
        text_ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        rows, spans = [], []
        for ids in text_ids:
            row = list(self._prefix) + pieces[0]
            start = len(row)
            for piece in pieces[1:]:
                start = len(row)
                row += ids + piece
            rows.append(row)
            spans.append((start, start + len(ids)) if self.mode != "prompt" else (len(row) - 1, len(row)))
        seq = max(map(len, rows))
        input_ids = torch.full((len(rows), seq), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), seq), dtype=torch.long)
        pool = torch.zeros((len(rows), seq), dtype=torch.bool)
        for i, (row, (a, b)) in enumerate(zip(rows, spans)):
            input_ids[i, :len(row)] = torch.tensor(row)
            attention[i, :len(row)] = 1
            pool[i, a:b] = True
        return input_ids.to(self.device), attention.to(self.device), pool.to(self.device)

    def input_vocabulary(self, texts: list[str]) -> torch.Tensor:
        """``[batch, vocab]`` bool: the ids of each text's words, with and without a leading space, as
        written and lowercased (PromptReps keeps only these for its single-position vector)."""
        allowed = torch.zeros((len(texts), self.vocab), dtype=torch.bool, device=self.device)
        for i, text in enumerate(texts):
            words = _WORD.findall(text[: self.max_length * CHARS_PER_TOKEN])
            words += [w.lower() for w in words]
            ids = self.tokenizer([" ".join(words), "\n".join(words)], add_special_tokens=False)["input_ids"]
            allowed[i, torch.tensor(ids[0] + ids[1], dtype=torch.long, device=self.device)] = True
        return allowed

    # --- encoding ----------------------------------------------------------------------
    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        input_ids, attention, pool = self.build_inputs(texts, is_query)
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention)[0]
        out = pool_logits(hidden, pool, lambda h: self.scores(self._head(h)), self.vocab, self.pooling,
                          self.max_chunk_elements)
        return self._postprocess(out, texts)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The ``score`` of every token from ``[..., vocab]`` logits."""
        if self.score == "logits":
            return logits
        return torch.log_softmax(logits.float(), -1) + math.log(self.vocab)

    def _postprocess(self, weights: torch.Tensor, texts: list[str]) -> torch.Tensor:
        if self.restrict_to_input:
            weights = weights * self.input_vocabulary(texts)
        weights[:, self._excluded] = 0
        return weights


@torch.inference_mode()
def naive_encode(encoder: LLMSparseEncoder, texts: list[str], is_query: bool = False) -> torch.Tensor:
    """The formula on full ``batch x seq x vocab`` logits of ``model(...)``, in input order.

    A reference for tests: it materialises every logit, so keep batches small.
    """
    input_ids, attention, pool = encoder.build_inputs(texts, is_query)
    logits = encoder.model(input_ids=input_ids, attention_mask=attention).logits.float()
    w = torch.log1p(torch.relu(encoder.scores(logits))) * pool.unsqueeze(-1)
    out = w.amax(1) if encoder.pooling == "max" else w.sum(1)
    return encoder._postprocess(out, texts)

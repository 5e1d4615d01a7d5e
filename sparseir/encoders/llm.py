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

``attention="bidirectional"`` (LLM2Vec's first step) gives every position the whole text: the
causal mask is replaced by a 4-D all-visible one (padding keys masked), passed to the model as a
prepared mask, which transformers hands to the attention kernel unchanged (eager and SDPA alike),
so the shared weights are untouched. Pooling then follows masked next-token prediction (MNTP): the
output at position ``i - 1`` stands for token ``i``, so the pooled positions are the text's own,
shifted left by one (a leading BOS token is added when nothing precedes the text). ``adapter=DIR``
loads a LoRA adapter made by ``sparseir llm adapt`` (:mod:`sparseir.train.mntp`) and merges it into
a private copy of the base weights, after checking the base model's fingerprint.

``score="pmi"`` subtracts the model's prior: ``log p(v | text) - log p(v | template, empty text)``,
an IDF-like normalisation (pointwise mutual information between the text and the token). Tokens
every context predicts ("the", "The", the instruction's echo) cancel out; ``word_start`` drops word
pieces that do not start a word (``##j``, ``##sw``).

Templates hold one or more ``{text}`` placeholders (other braces are literal). Each template piece
and the text are tokenised apart and concatenated, so the pooled positions are known exactly;
a single space right before ``{text}`` is folded into the text's tokens (``" word"``, as the model
saw in pre-training). Batches are right-padded: under causal attention the real positions never
see the padding, so a batch gives the same vectors as one text at a time.

Memory stays bounded as in :mod:`.mlm`: the LM head runs over the packed pooled rows only, in
chunks of at most ``max_chunk_elements`` logits (see :func:`.pooling.pool_logits`).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .base import EncoderError, SparseEncoder, Tokens, module_fingerprint, position_limit
from .mlm import CHARS_PER_TOKEN, load_pretrained, resolve_model_path
from .pooling import POOLINGS, Trace, pool_logits
from .sources import ProvenanceError

MODES = ("plain", "echo", "prompt")
SCORES = ("logits", "logprob", "pmi")
ATTENTIONS = ("causal", "bidirectional")
#: Written by ``sparseir llm adapt`` next to the peft files; :func:`read_adapter` checks it.
ADAPTER_META = "sparseir_adapter.json"
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


def vocabulary_terms(tokenizer: PreTrainedTokenizerBase,
                     vocab: int) -> tuple[list[str], list[int], list[int], list[int]]:
    """Unique readable names for ``vocab`` ids, the special ids, the whitespace/punctuation ids, and the
    word pieces that do not start a word (named ``"##..."`` or not).

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
    pieces = [i for i in range(n) if i not in special and not word_start[i]]
    return names, sorted(special), noise, pieces


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


def bidirectional_mask(attention: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, 1, seq, seq]`` additive mask from a ``[batch, seq]`` padding mask: every query position
    sees every real key position, in both directions; padding keys are masked."""
    keys = attention[:, None, None, :].bool()
    return torch.zeros(keys.shape, dtype=dtype, device=attention.device).masked_fill(~keys, torch.finfo(dtype).min) \
        .expand(-1, 1, attention.shape[1], -1)


def hidden_states(model: PreTrainedModel, input_ids: torch.Tensor, attention: torch.Tensor,
                  bidirectional: bool) -> torch.Tensor:
    """Last hidden states ``[batch, seq, hidden]`` of the model's body, with causal or full attention."""
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    if bidirectional:
        attention = bidirectional_mask(attention, next(model.parameters()).dtype)
    return body(input_ids=input_ids, attention_mask=attention)[0]


def declared_architectures(path: str) -> str:
    """The ``architectures`` a model folder's ``config.json`` declares (empty when there is none)."""
    config = Path(path) / "config.json"
    try:
        return " ".join(json.loads(config.read_text(encoding="utf-8")).get("architectures") or [])
    except (OSError, ValueError, AttributeError):
        return ""


def load_causal_lm(path: str, gguf_file: str | None) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and eval-mode causal LM as stored (float32 on the CPU for GGUF); a masked LM is refused
    with a clear error."""
    archs = declared_architectures(path)
    if "MaskedLM" in archs:
        raise EncoderError(f"{path} is a masked LM ({archs}), not a causal (decoder-only) LM; use the 'mlm' "
                           "encoder family (MLMSparseEncoder) for it")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer", **extra)
    return tokenizer, load_pretrained(AutoModelForCausalLM, path, "causal-LM model", **extra).eval()


def to_device(model: PreTrainedModel, device: str) -> PreTrainedModel:
    """``model`` on ``device``, in bf16 on CUDA."""
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        model = model.to(dtype=torch.bfloat16)
    return model.to(device)


def read_adapter(adapter: str | Path) -> dict[str, Any]:
    """The metadata of an adapter folder written by ``sparseir llm adapt``, checked for completeness."""
    folder = Path(adapter)
    meta_path = folder / ADAPTER_META
    if not folder.is_dir():
        raise EncoderError(f"adapter {folder} does not exist or is not a folder")
    for name in (ADAPTER_META, "adapter_config.json", "adapter_model.safetensors"):
        if not (folder / name).is_file():
            raise EncoderError(f"adapter {folder} is incomplete or not a sparseir adapter: {name} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["base_fingerprint"], meta["attention"]  # noqa: B018 - required keys
    except (ValueError, KeyError, TypeError) as e:
        raise EncoderError(f"adapter metadata {meta_path} is corrupt ({type(e).__name__}: {e})") from e
    return meta


def check_adapter(adapter: str | Path, base_fingerprint: str) -> dict[str, Any]:
    """:func:`read_adapter`, and an error unless the adapter was made for weights with ``base_fingerprint``."""
    meta = read_adapter(adapter)
    if meta["base_fingerprint"] != base_fingerprint:
        raise EncoderError(f"adapter {adapter} was made for another base model (fingerprint "
                           f"{meta['base_fingerprint']}, model {meta.get('base_model')!r}); this base model's "
                           f"fingerprint is {base_fingerprint}")
    return meta


def apply_adapter(model: PreTrainedModel, adapter: str | Path, base_fingerprint: str) -> PreTrainedModel:
    """``model`` with the LoRA adapter merged in, after checking it was made for these base weights."""
    check_adapter(adapter, base_fingerprint)
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise EncoderError(f"cannot load adapter {adapter}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    return merged.eval()


@lru_cache(maxsize=3)
def _load(path: str, gguf_file: str | None, device: str, adapter: str | None = None
          ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, list[str], list[int], list[int], list[int]]:
    """Tokenizer, eval-mode model and vocabulary names; cached, so encoder variants over one checkpoint
    (modes, templates, masks) share a single copy of the weights. An adapter gets its own merged copy."""
    tokenizer, model = load_causal_lm(path, gguf_file)
    if adapter is not None:
        model = apply_adapter(model, adapter, module_fingerprint(model))
    return (tokenizer, to_device(model, device).eval(), *vocabulary_terms(tokenizer, model.config.vocab_size))


class LLMSparseEncoder(SparseEncoder):
    """Vocabulary-space sparse vectors from any ``AutoModelForCausalLM`` id, folder or GGUF checkpoint.

    ``mode`` is ``"plain"``, ``"echo"`` or ``"prompt"`` (default: ``prompt`` under causal attention,
    ``plain`` under bidirectional attention, which has no next-token slot after an instruction);
    ``doc_template``/``query_template`` override its defaults (:data:`TEMPLATES`). ``attention`` is
    ``"causal"`` or ``"bidirectional"`` (default: the adapter's, else causal). ``adapter`` is a LoRA
    folder from ``sparseir llm adapt``. ``mask`` zeroes special, pure-whitespace and pure-punctuation
    tokens; ``word_start`` also zeroes word pieces that start no word. ``score`` is ``"logits"``,
    ``"logprob"`` or ``"pmi"`` (see the module docstring; default ``pmi`` for ``prompt``, whose single
    position has one well-defined prior, else ``logprob``: a prior taken at the text's start is the
    wrong prior for its later positions and leaves plain/echo vectors dense). ``restrict_to_input``
    keeps only the ids of the text's own words (default: on for ``prompt``, off otherwise).
    ``max_length`` bounds each copy of the text.
    """

    name = "llm"

    def __init__(self, model_name_or_path: str, *, gguf_file: str | None = None, mode: str | None = None,
                 attention: str | None = None, adapter: str | None = None,
                 doc_template: str | None = None, query_template: str | None = None, mask: bool = True,
                 word_start: bool = True, score: str | None = None,
                 restrict_to_input: bool | None = None, max_length: int = 256, query_max_length: int = 64,
                 pooling: str = "max", max_active_dims: int | None = None, batch_size: int = 16,
                 device: str | torch.device | None = None, max_chunk_elements: int = 1 << 23) -> None:
        super().__init__(batch_size=batch_size, max_active_dims=max_active_dims, device=device)
        self.adapter = str(Path(adapter).resolve()) if adapter is not None else None
        meta = read_adapter(self.adapter) if self.adapter is not None else {}
        attention = attention if attention is not None else meta.get("attention", "causal")
        if attention not in ATTENTIONS:
            raise EncoderError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        mode = mode if mode is not None else ("prompt" if attention == "causal" else "plain")
        if mode not in MODES:
            raise EncoderError(f"mode must be one of {MODES}, got {mode!r}")
        if attention == "bidirectional" and mode == "prompt":
            raise EncoderError("prompt mode reads the next-token prediction after an instruction, which needs "
                               "causal attention; use mode='plain' or 'echo' with attention='bidirectional'")
        if pooling not in POOLINGS:
            raise EncoderError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        score = score if score is not None else ("pmi" if mode == "prompt" else "logprob")
        if score not in SCORES:
            raise EncoderError(f"score must be one of {SCORES}, got {score!r}")
        self.mode, self.attention, self.pooling, self.score = mode, attention, pooling, score
        self.mask, self.word_start = bool(mask), bool(word_start)
        self.doc_template = doc_template if doc_template is not None else TEMPLATES[mode][0]
        self.query_template = query_template if query_template is not None else TEMPLATES[mode][1]
        self._pieces = {False: _split_template(self.doc_template, mode),
                        True: _split_template(self.query_template, mode)}
        self.restrict_to_input = (mode == "prompt") if restrict_to_input is None else bool(restrict_to_input)
        self.max_chunk_elements = max_chunk_elements
        path, self.gguf_file = find_gguf(resolve_model_path(str(model_name_or_path)), gguf_file)
        self.model_name_or_path = path
        loaded = _load(path, self.gguf_file, str(self.device), self.adapter)
        self.tokenizer, self.model, self._terms, self.special_ids, self.noise_ids, self.piece_ids = loaded
        self.vocab = self.model.config.vocab_size
        limit = position_limit(self.model, self.tokenizer)
        self.max_length = self._check_max_length(max_length, limit, "--max-length")
        self.query_max_length = self._check_max_length(query_max_length, limit, "--query-max-length")
        excluded = set(range(len(self.tokenizer), self.vocab))
        if self.mask:
            excluded |= set(self.special_ids) | set(self.noise_ids)
        if self.word_start:
            excluded |= set(self.piece_ids)
        self._excluded = torch.tensor(sorted(excluded), dtype=torch.long, device=self.device)
        self._head = lm_head(self.model)
        self._prefix = self._special_prefix()
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        #: What a row starts with when nothing else would precede the first pooled (shifted) position.
        self._start = self._prefix or ([bos] if bos is not None else [])
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._piece_ids: dict[tuple[bool, int], list[int]] = {}
        self._prior: dict[bool, torch.Tensor] = {}
        self._fingerprint: str | None = None

    @property
    def bidirectional(self) -> bool:
        return self.attention == "bidirectional"

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
                "attention": self.attention, "adapter": self.adapter,
                "doc_template": self.doc_template, "query_template": self.query_template, "score": self.score,
                "mask": self.mask, "word_start": self.word_start, "restrict_to_input": self.restrict_to_input,
                "max_length": self.max_length, "query_max_length": self.query_max_length, "pooling": self.pooling,
                "max_active_dims": self.max_active_dims}

    @property
    def fingerprint(self) -> str:
        """Hash of the weights in use (an adapter is merged in, so it changes the fingerprint)."""
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

    def _rows(self, text_ids: list[list[int]], is_query: bool) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """Token rows and the pooled ``[a, b)`` span of each.

        ``plain``/``echo``: under causal attention, the (last copy of the) text's own positions, each
        predicting the next token; under bidirectional attention, the same shifted left by one (MNTP:
        the output at ``i - 1`` stands for token ``i``). ``prompt``: the last position. An empty text
        gives the one position that predicts its first token (the model's prior, for ``score="pmi"``).
        """
        pieces, _ = self._pieces_for(is_query)
        shift = 1 if self.bidirectional else 0
        rows, spans = [], []
        for ids in text_ids:
            row = list(self._prefix) + pieces[0]
            if not row and (shift or not ids):
                row = list(self._start)
            start = len(row)
            for piece in pieces[1:]:
                start = len(row)
                row += ids + piece
            rows.append(row)
            if self.mode == "prompt":
                spans.append((len(row) - 1, len(row)))
            elif not ids:
                spans.append((start - 1, start))
            else:
                spans.append((start - shift, start + len(ids) - shift))
        return rows, spans

    def _text_ids(self, texts: list[str], is_query: bool, offsets: bool = False) -> Any:
        """The texts' own tokens (truncated; with a leading space when the template asks for one) and, when
        ``offsets``, each token's character span in the text as given."""
        max_length = self.query_max_length if is_query else self.max_length
        _, lead = self._pieces_for(is_query)
        texts = [(" " if lead else "") + t[: max_length * CHARS_PER_TOKEN] if t else "" for t in texts]
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length,
                             return_offsets_mapping=offsets)
        if offsets and lead:
            enc["offset_mapping"] = [[(s - 1, e - 1) for s, e in row] for row in enc["offset_mapping"]]
        return enc

    def build_inputs(self, texts: list[str], is_query: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and the mode's ``pool_mask``, all ``[batch, seq]``."""
        return self._tensors(self._text_ids(texts, is_query)["input_ids"], is_query)

    def _tensors(self, text_ids: list[list[int]], is_query: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, spans = self._rows(text_ids, is_query)
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
            ids = self.tokenizer([" " + " ".join(words), "\n".join(words)], add_special_tokens=False)["input_ids"]
            allowed[i, torch.tensor(ids[0] + ids[1], dtype=torch.long, device=self.device)] = True
        return allowed

    # --- encoding ----------------------------------------------------------------------
    def logits(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Full ``[batch, seq, vocab]`` logits under this encoder's attention (for tests and the prior)."""
        return self._head(hidden_states(self.model, input_ids, attention, self.bidirectional))

    def prior(self, is_query: bool) -> torch.Tensor:
        """``[vocab]`` log-probabilities at the pooled position of an empty text: the model's prior."""
        if is_query not in self._prior:
            with torch.inference_mode():
                input_ids, attention, pool = self.build_inputs([""], is_query)
                logits = self.logits(input_ids, attention)[pool]
                self._prior[is_query] = torch.log_softmax(logits.float(), -1)[0]
        return self._prior[is_query]

    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        return self._pooled(texts, self.build_inputs(texts, is_query), is_query)

    def _pooled(self, texts: list[str], inputs: tuple[torch.Tensor, ...], is_query: bool,
                trace: bool = False) -> Any:
        input_ids, attention, pool = inputs
        hidden = hidden_states(self.model, input_ids, attention, self.bidirectional)
        out = pool_logits(hidden, pool, lambda h: self.scores(self._head(h), is_query), self.vocab, self.pooling,
                          self.max_chunk_elements, trace=trace)
        return (self._postprocess(out[0], texts), out[1]) if trace else self._postprocess(out, texts)

    def _trace(self, text: str, is_query: bool) -> tuple[torch.Tensor, Trace, Tokens]:
        """Pooled position ``p`` stands for the text's token ``p - a`` (``a``: the first pooled position):
        under causal attention the token at ``p`` itself, under bidirectional attention (MNTP) the
        token at ``p + 1``, whose prediction the output at ``p`` makes."""
        if self.mode == "prompt":
            raise ProvenanceError("the LLM encoder's prompt mode pools one position after the instruction, which "
                                  "reads the whole text: its dimensions have no source token (use plain or echo mode)")
        enc = self._text_ids([text], is_query, offsets=True)
        inputs = self._tensors(enc["input_ids"], is_query)
        weights, trace = self._pooled([text], inputs, is_query, trace=True)
        seq, first = inputs[0].shape[1], int(inputs[2][0].nonzero()[0])
        names = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
        tokens: Tokens = [("", None)] * seq
        for j, (name, span) in enumerate(zip(names, enc["offset_mapping"][0])):
            tokens[first + j] = (name, tuple(span))
        return weights[0], trace, tokens

    def scores(self, logits: torch.Tensor, is_query: bool = False) -> torch.Tensor:
        """The ``score`` of every token from ``[..., vocab]`` logits."""
        if self.score == "logits":
            return logits
        logprob = torch.log_softmax(logits.float(), -1)
        if self.score == "pmi":
            return logprob - self.prior(is_query)
        return logprob + math.log(self.vocab)

    def _postprocess(self, weights: torch.Tensor, texts: list[str]) -> torch.Tensor:
        if self.restrict_to_input:
            weights = weights * self.input_vocabulary(texts)
        weights[:, self._excluded] = 0
        return weights


@torch.inference_mode()
def naive_encode(encoder: LLMSparseEncoder, texts: list[str], is_query: bool = False) -> torch.Tensor:
    """The formula on full ``batch x seq x vocab`` logits, in input order.

    A reference for tests: it materialises every logit, so keep batches small.
    """
    input_ids, attention, pool = encoder.build_inputs(texts, is_query)
    if encoder.bidirectional:
        attention = bidirectional_mask(attention, next(encoder.model.parameters()).dtype)
    logits = encoder.model(input_ids=input_ids, attention_mask=attention).logits.float()
    w = torch.log1p(torch.relu(encoder.scores(logits, is_query))) * pool.unsqueeze(-1)
    out = w.amax(1) if encoder.pooling == "max" else w.sum(1)
    return encoder._postprocess(out, texts)

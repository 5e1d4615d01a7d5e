"""Human-readable feature labels and example snippets.

Hidden-state SAEs: a feature is labelled by the tokens it fires on most strongly, and shown
with those tokens in context. Embedding SAEs: a feature is labelled by the words that are
over-represented (TF-IDF within its top-activating texts against all collected texts). This
grounds the label in what the feature actually responds to on the data distribution; a
single vocabulary token embedded on its own is far outside the distribution of sentence
embeddings the SAE was trained on, so its activations say little about real usage.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from sparseir.sae.diagnostics import ScanResult
from sparseir.sae.store import ActivationStore

_WORD = re.compile(r"[a-z][a-z0-9\-]{2,}")
STOPWORDS = frozenset(
    """the and for with that this from are was were has have had not but its their than then there these those
    which who whom whose what when where while also into onto over under between among within without about after
    before during through across can could may might must shall should will would our your his her him she they them
    been being such both each either neither other any all some most more less few many much very only own same
    using used use based however therefore thus here via per one two three four five six seven eight nine ten
    results result study studies show showed shown found find data analysis associated including include included
    increased decreased significantly significant compared effect effects well high low higher lower whether
    although because since""".split()
)
DEAD = "dead"


def words(text: str) -> set[str]:
    """Content words of ``text`` (lower-case, 3+ characters, no stop words)."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and not w.isdigit()}


def feature_name(index: int, words_: list[str]) -> str:
    """The term name of feature ``index``: ``f0042:insulin/glucose``."""
    return f"f{index}:{'/'.join(words_) if words_ else DEAD}"


def _snippet(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def embedding_labels(
    scan: ScanResult, store: ActivationStore, *, n_words: int = 3, n_examples: int = 8
) -> tuple[list[str], list[list[dict]]]:
    """Labels and top examples of an embedding-source SAE."""
    texts = store.texts()
    row_text = np.asarray(store.row_text())
    bags = [words(t["text"]) for t in texts]
    df = Counter(w for bag in bags for w in bag)
    n = len(texts)
    labels, examples = [], []
    for f in range(len(scan.freq)):
        rows = scan.top_rows[f][scan.top_rows[f] >= 0]
        if len(rows) == 0:
            labels.append(feature_name(f, []))
            examples.append([])
            continue
        tids = row_text[rows]
        counts = Counter(w for t in dict.fromkeys(tids.tolist()) for w in bags[t])
        min_count = 2 if len(set(tids.tolist())) >= 4 else 1
        scored = sorted(
            ((c * math.log((n + 1) / (df[w] + 1)), w) for w, c in counts.items() if c >= min_count), reverse=True
        )
        labels.append(feature_name(f, [w for _, w in scored[:n_words]] or ["?"]))
        examples.append(
            [
                {"id": texts[t]["id"], "act": float(v), "snippet": _snippet(texts[t]["text"])}
                for t, v in zip(tids[:n_examples], scan.top_vals[f][: len(rows)][:n_examples])
            ]
        )
    return labels, examples


def hidden_labels(
    scan: ScanResult, store: ActivationStore, tokenizer, *, n_tokens: int = 3, n_examples: int = 8, window: int = 8
) -> tuple[list[str], list[list[dict]]]:
    """Labels (top activating tokens) and in-context examples of a hidden-state SAE."""
    texts = store.texts()
    row_text = np.asarray(store.row_text())
    token_ids = np.asarray(store.token_ids())
    labels, examples = [], []
    for f in range(len(scan.freq)):
        rows = scan.top_rows[f][scan.top_rows[f] >= 0]
        vals = scan.top_vals[f][: len(rows)]
        if len(rows) == 0:
            labels.append(feature_name(f, []))
            examples.append([])
            continue
        weight: Counter = Counter()
        for r, v in zip(rows, vals):
            weight[tokenizer.convert_ids_to_tokens(int(token_ids[r]))] += float(v)
        top = [t.removeprefix("##").removeprefix("Ġ").removeprefix("▁") or t
               for t, _ in weight.most_common(n_tokens)]
        labels.append(feature_name(f, list(dict.fromkeys(top))))
        ex = []
        for r, v in list(zip(rows, vals))[:n_examples]:
            t = row_text[r]
            lo, hi = max(0, r - window), min(len(row_text), r + window + 1)
            same = np.nonzero(row_text[lo:hi] == t)[0] + lo
            left = tokenizer.decode(token_ids[same[same < r]].tolist())
            right = tokenizer.decode(token_ids[same[same > r]].tolist())
            tok = tokenizer.decode([int(token_ids[r])])
            ex.append({"id": texts[t]["id"], "act": float(v), "snippet": f"{left} [[{tok}]] {right}".strip()})
        examples.append(ex)
    return labels, examples

"""Streaming readers for corpora, queries and qrels.

A *spec* names a source:

- a BEIR folder (``corpus.jsonl`` with ``_id``/``title``/``text``, ``queries.jsonl``, ``qrels/<split>.tsv``),
- a JSONL file (configurable id and text fields),
- a TSV file (``id<TAB>text``),
- ``irds:<ir_datasets id>`` such as ``irds:beir/scifact/test`` (needs a network the first time).

Documents are streamed, never loaded whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

IRDS_PREFIX = "irds:"


class CorpusError(ValueError):
    """Malformed or missing input; the message names the file and line."""


class Document(NamedTuple):
    id: str
    text: str


def _join(parts: Sequence[object]) -> str:
    return " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


@dataclass(frozen=True)
class Corpus:
    """An iterable of :class:`Document` read lazily from ``spec``."""

    spec: str
    id_field: str = "_id"
    text_fields: tuple[str, ...] = ("title", "text")

    def _source(self) -> tuple[str, Path | str]:
        if self.spec.startswith(IRDS_PREFIX):
            return "irds", self.spec[len(IRDS_PREFIX):]
        path = Path(self.spec)
        if path.is_dir():
            if not (path / "corpus.jsonl").is_file():
                raise CorpusError(f"{path}: folder has no corpus.jsonl (expected a BEIR folder)")
            return "jsonl", path / "corpus.jsonl"
        if not path.is_file():
            raise CorpusError(f"{path}: no such file or folder")
        if path.suffix == ".tsv":
            return "tsv", path
        return "jsonl", path

    def __iter__(self) -> Iterator[Document]:
        kind, src = self._source()
        if kind == "irds":
            for doc in _irds(src).docs_iter():
                yield Document(str(doc.doc_id), doc.default_text())
        elif kind == "tsv":
            yield from _read_tsv(src)
        else:
            for lineno, obj in _read_jsonl(src):
                if self.id_field not in obj:
                    raise CorpusError(f"{src}:{lineno}: missing id field {self.id_field!r}")
                missing = [f for f in self.text_fields if f not in obj]
                if len(missing) == len(self.text_fields):
                    raise CorpusError(f"{src}:{lineno}: none of the text fields {list(self.text_fields)} present")
                yield Document(str(obj[self.id_field]), _join([obj.get(f) for f in self.text_fields]))

    def __len__(self) -> int:
        kind, src = self._source()
        if kind == "irds":
            return _irds(src).docs_count()
        return _count_lines(src)  # an upper bound when the file has blank lines


def _read_tsv(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            doc_id, sep, text = line.partition("\t")
            if not sep:
                raise CorpusError(f"{path}:{lineno}: expected 'id<TAB>text'")
            yield Document(doc_id, text)


def _irds(dataset_id: str):
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError as e:
        raise CorpusError(f"unknown ir_datasets id {dataset_id!r}") from e


def load_corpus(spec: str | Path, *, id_field: str = "_id", text_fields: Sequence[str] = ("title", "text")) -> Corpus:
    """Open a corpus for streaming. Nothing is read until it is iterated."""
    corpus = Corpus(str(spec), id_field, tuple(text_fields))
    corpus._source()  # fail early on a missing path
    return corpus


def load_queries(spec: str | Path) -> dict[str, str]:
    """Queries of a BEIR folder, a JSONL/TSV file, or an ``irds:`` dataset."""
    spec = str(spec)
    if spec.startswith(IRDS_PREFIX):
        return {q.query_id: q.default_text() for q in _irds(spec[len(IRDS_PREFIX):]).queries_iter()}
    path = Path(spec)
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: no such queries file")
    if path.suffix == ".tsv":
        return {d.id: d.text for d in _read_tsv(path)}
    return {d.id: d.text for d in Corpus(str(path), "_id", ("text",))}


def load_qrels(spec: str | Path, split: str = "test") -> dict[str, dict[str, int]]:
    """Relevance judgements ``{query_id: {doc_id: grade}}``.

    Reads ``qrels/<split>.tsv`` (BEIR, with a header) or a TREC qrels file.
    """
    spec = str(spec)
    qrels: dict[str, dict[str, int]] = {}
    if spec.startswith(IRDS_PREFIX):
        for q in _irds(spec[len(IRDS_PREFIX):]).qrels_iter():
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        return qrels
    path = Path(spec)
    if path.is_dir():
        path = path / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise CorpusError(f"{path}: no such qrels file")
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0] == "query-id"):
                continue
            if len(row) == 1:
                row = row[0].split()
            if len(row) == 3:
                qid, did, grade = row
            elif len(row) == 4:  # TREC: qid iter docid grade
                qid, _, did, grade = row
            else:
                raise CorpusError(f"{path}:{lineno}: expected 'query-id corpus-id score'")
            try:
                qrels.setdefault(qid, {})[did] = int(grade)
            except ValueError:
                raise CorpusError(f"{path}:{lineno}: relevance grade {grade!r} is not an integer") from None
    return qrels

"""Streaming readers for corpora, queries and qrels.

A *spec* names a source:

- a BEIR folder (``corpus.jsonl`` or ``corpus.jsonl.gz``/``.zst`` with ``_id``/``title``/``text``,
  ``queries.jsonl``, ``qrels/<split>.tsv``),
- a JSONL file (configurable id and text fields), plain, ``.gz`` or ``.zst``,
- a TSV file (``id<TAB>text``), plain, ``.gz`` or ``.zst``; a UTF-8 BOM is stripped and a header row
  (``id``, ``docid``, ``_id``, ``qid``, ...) is detected, or declared with ``tsv_header``,
- ``irds:<ir_datasets id>`` such as ``irds:beir/scifact/test`` (needs a network the first time).

Documents are streamed, never loaded whole. Every malformed line raises :class:`CorpusError`
naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from .errors import SparseirError

IRDS_PREFIX = "irds:"
COMPRESSIONS = ("", ".gz", ".zst")
#: first-column names that mark a TSV header row when ``tsv_header`` is not given
TSV_HEADER_IDS = frozenset({"id", "_id", "docid", "doc_id", "doc-id", "pid", "qid", "query_id", "query-id",
                            "corpus-id", "corpus_id"})


class CorpusError(SparseirError, ValueError):
    """Malformed or missing input; the message names the file and line."""


class Document(NamedTuple):
    """One document: ``text`` is what is encoded (title and body joined), ``title`` is for display,
    ``fields`` holds the record's other JSON fields."""

    id: str
    text: str
    title: str = ""
    fields: dict[str, Any] | None = None


def _join(parts: Sequence[object]) -> str:
    return " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())


def _kind(path: Path) -> str:
    """``"tsv"`` or ``"jsonl"`` from the name, compression suffix ignored."""
    name = path.name.removesuffix(".gz").removesuffix(".zst")
    return "tsv" if name.endswith(".tsv") else "jsonl"


def _open_binary(path: Path) -> tuple[IO[bytes], tuple[type[Exception], ...]]:
    """The decompressed byte stream of ``path`` and the errors its decompressor raises on bad data."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb"), (OSError, EOFError)
    if path.name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(_ZstdReader(open(path, "rb"))), (OSError, EOFError, zstandard.ZstdError)
    return open(path, "rb"), (OSError,)


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) .zst file; a file cut inside a frame raises ``EOFError``
    (zstandard's own ``stream_reader`` just stops there, which would lose documents silently)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._frame, self._in_frame, self._pending = self._new(), False, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            data = self._raw.read(1 << 16)
            if not data:
                if self._in_frame:
                    raise EOFError("compressed file ended before the end of its last frame")
                return 0
            out = []
            while data:
                out.append(self._frame.decompress(data))
                self._in_frame = not self._frame.eof
                data = b""
                if self._frame.eof:  # the next frame, if any, starts in unused_data
                    data, self._frame = self._frame.unused_data, self._new()
            self._pending = b"".join(out)
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line of a plain or compressed UTF-8 file, line ends removed.

    A leading BOM is dropped; bytes that are not UTF-8 raise :class:`CorpusError` with file and line.
    """
    try:
        f, bad_data = _open_binary(path)
    except OSError as e:
        raise CorpusError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        lineno = 0
        try:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                                      f"column {e.start + 1}); convert the file to UTF-8") from None
                yield lineno, line.rstrip("\r\n")
        except bad_data as e:  # truncated or corrupt .gz/.zst, or a read error
            raise CorpusError(f"{path}:{lineno + 1}: cannot read ({e})") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _doc_id(value: Any, where: str, field: str) -> str:
    """A record's id as a string: a non-empty string or an integer, anything else is an error."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{where}: id field {field!r} must be a string or an integer, got {json.dumps(value)}")
    value = str(value)
    if not value.strip():
        raise CorpusError(f"{where}: id field {field!r} is empty")
    return value


def _find(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{c}" for c in COMPRESSIONS if (folder / f"{stem}{c}").is_file()), None)


@dataclass(frozen=True)
class Corpus:
    """An iterable of :class:`Document` read lazily from ``spec``."""

    spec: str
    id_field: str = "_id"
    text_fields: tuple[str, ...] = ("title", "text")
    tsv_header: bool | None = None

    def _source(self) -> tuple[str, Path | str]:
        if self.spec.startswith(IRDS_PREFIX):
            return "irds", self.spec[len(IRDS_PREFIX):]
        path = Path(self.spec)
        if path.is_dir():
            found = _find(path, "corpus.jsonl")
            if found is None:
                raise CorpusError(f"{path}: folder has no corpus.jsonl(.gz/.zst) (expected a BEIR folder)")
            return "jsonl", found
        if not path.is_file():
            raise CorpusError(f"{path}: no such file or folder")
        return _kind(path), path

    def __iter__(self) -> Iterator[Document]:
        kind, src = self._source()
        if kind == "irds":
            for doc in _irds(src).docs_iter():
                yield Document(str(doc.doc_id), doc.default_text(), str(getattr(doc, "title", "") or ""))
        elif kind == "tsv":
            yield from _read_tsv(src, self.tsv_header)
        else:
            yield from self._jsonl(src)

    def _jsonl(self, src: Path) -> Iterator[Document]:
        used = {self.id_field, *self.text_fields, "title"}
        for lineno, obj in _read_jsonl(src):
            where = f"{src}:{lineno}"
            if self.id_field not in obj:
                raise CorpusError(f"{where}: missing id field {self.id_field!r}")
            if not any(f in obj for f in self.text_fields):
                raise CorpusError(f"{where}: none of the text fields {list(self.text_fields)} present")
            title = obj.get("title")
            others = {k: v for k, v in obj.items() if k not in used}
            yield Document(_doc_id(obj[self.id_field], where, self.id_field),
                           _join([obj.get(f) for f in self.text_fields]),
                           title.strip() if isinstance(title, str) else "", others or None)

    def __len__(self) -> int:
        kind, src = self._source()
        if kind == "irds":
            return _irds(src).docs_count()
        return _count_lines(src)  # an upper bound when the file has blank lines


def _count_lines(path: Path) -> int:
    f, bad_data = _open_binary(path)
    with f:
        try:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except bad_data as e:
            raise CorpusError(f"{path}: cannot read ({e})") from None


def _read_tsv(path: Path, header: bool | None = None) -> Iterator[Document]:
    """``id<TAB>text`` rows; ``header`` True skips the first row, None skips it if it looks like one."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        doc_id, sep, text = line.partition("\t")
        if lineno == 1 and (header or (header is None and sep and doc_id.strip().lower() in TSV_HEADER_IDS)):
            continue
        if not sep:
            raise CorpusError(f"{path}:{lineno}: expected 'id<TAB>text'")
        yield Document(_doc_id(doc_id, f"{path}:{lineno}", "id"), text)


def _irds(dataset_id: str):
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError as e:
        raise CorpusError(f"unknown ir_datasets id {dataset_id!r}") from e


def load_corpus(spec: str | Path, *, id_field: str = "_id", text_fields: Sequence[str] = ("title", "text"),
                tsv_header: bool | None = None) -> Corpus:
    """Open a corpus for streaming. Nothing is read until it is iterated."""
    if isinstance(text_fields, str):
        text_fields = [f.strip() for f in text_fields.split(",")]
    if not [f for f in text_fields if f]:
        raise CorpusError("text_fields is empty; name at least one JSONL field")
    corpus = Corpus(str(spec), id_field, tuple(f for f in text_fields if f), tsv_header)
    corpus._source()  # fail early on a missing path
    return corpus


def load_queries(spec: str | Path, *, tsv_header: bool | None = None) -> dict[str, str]:
    """Queries ``{qid: text}`` of a BEIR folder, a JSONL/TSV file (``_id`` or ``id``, ``text``),
    or an ``irds:`` dataset. A repeated query id is an error."""
    spec = str(spec)
    if spec.startswith(IRDS_PREFIX):
        return {q.query_id: q.default_text() for q in _irds(spec[len(IRDS_PREFIX):]).queries_iter()}
    path = Path(spec)
    if path.is_dir():
        path = _find(path, "queries.jsonl") or path / "queries.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: no such queries file")
    if _kind(path) == "tsv":
        docs: Iterator[Document] = _read_tsv(path, tsv_header)
    else:
        docs = (Document(_doc_id(obj.get("_id", obj.get("id")), f"{path}:{n}", "_id"),
                         _query_text(obj, f"{path}:{n}")) for n, obj in _read_jsonl(path))
    queries: dict[str, str] = {}
    for d in docs:
        if d.id in queries:
            raise CorpusError(f"{path}: query id {d.id!r} appears more than once")
        queries[d.id] = d.text
    return queries


def _query_text(obj: dict, where: str) -> str:
    for field in ("text", "query", "title", "contents"):
        if isinstance(obj.get(field), str):
            return obj[field]
    raise CorpusError(f"{where}: no query text (expected a 'text' field)")


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
    for lineno, line in read_lines(path):
        row = line.split("\t") if "\t" in line else line.split()
        if not row or (lineno == 1 and row[0].strip().lower() in TSV_HEADER_IDS):
            continue
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

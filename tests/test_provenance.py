"""Token provenance: explain(..., provenance=True) points at the words of the query and the stored text."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sparseir.cli import main
from sparseir.corpus import Document
from sparseir.encoders.sources import ProvenanceError
from sparseir.index import IndexWriter
from sparseir.search import Searcher
from sparseir.search.searcher import DocumentNotFoundError

from conftest import SMOLLM
from tiny_sae import train_tiny_sae

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = [Document("d1", "Vitamin D supplements and the risk of hip fractures in older women.", "Vitamin D"),
        Document("d2", "A whale is a large marine mammal; the fox is a small canine.", "Animals"),
        Document("d3", "Broken bones heal slowly when calcium intake is low.", "Bones")]


@pytest.fixture(scope="module")
def index(splade_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("prov") / "ix"
    with IndexWriter(path, splade_tiny, quantize="float32") as w:
        w.add(DOCS)
    return path


@pytest.fixture(scope="module")
def searcher(index, splade_tiny):
    return Searcher(index, splade_tiny)


def _word_spans(text: str) -> dict[str, tuple[int, int]]:
    return {m.group().lower(): m.span() for m in re.finditer(r"\w+", text)}


@pytest.mark.parametrize("query, doc_id", [("hip fractures vitamin", "d1"), ("whale and fox", "d2"),
                                           ("calcium bones", "d3")])
def test_literal_terms_point_at_their_words(searcher, query, doc_id):
    text = searcher.doc(doc_id)["text"]
    doc_words, query_words = _word_spans(text), _word_spans(query)
    contributions = searcher.explain(query, doc_id, provenance=True)
    score = searcher.search(query, k=3)
    assert sum(c.product for c in contributions) == pytest.approx(dict(score)[doc_id], rel=1e-5)
    literal = [c for c in contributions if c.term in query_words and c.term in doc_words]
    assert literal, "the query shares words with the document"
    for c in literal:
        (src,) = c.doc_sources  # max pooling: one source position
        assert (src.start, src.end) == doc_words[c.term] and src.token.lower() == c.term
        assert src.weight == pytest.approx(c.doc_weight, rel=1e-5)
        (qsrc,) = c.query_sources
        assert (qsrc.start, qsrc.end) == query_words[c.term] and query[qsrc.start:qsrc.end].lower() == c.term


def test_expansion_terms_have_sources_and_plain_explain_is_unchanged(searcher):
    with_sources = searcher.explain("broken bone", "d3", provenance=True)
    plain = searcher.explain("broken bone", "d3")
    assert [c[:4] for c in with_sources] == [c[:4] for c in plain] and all(c.doc_sources is None for c in plain)
    text = searcher.doc("d3")["text"]
    for c in with_sources:
        assert c.doc_sources, c.term
        assert all(text[s.start:s.end] == s.token for s in c.doc_sources if s.start is not None)
    assert json.dumps([c.to_dict() for c in with_sources])  # JSON-ready


def test_sum_pooling_sources_add_up(tmp_path):
    from sparseir.encoders.mlm import MLMSparseEncoder

    from conftest import SPLADE_TINY

    enc = MLMSparseEncoder(str(SPLADE_TINY), pooling="sum", screen=False)
    text = "The fox saw another fox near the whale."
    vec = enc.encode_document(text)
    sources = enc.provenance(text)
    assert set(sources) == set(vec.indices)
    for dim, w in zip(vec.indices, vec.data):
        assert sum(s.weight for s in sources[dim]) == pytest.approx(float(w), rel=1e-4)
    fox = enc.terms.index("fox")
    assert {(s.start, s.end) for s in sources[fox]} >= {(4, 7), (20, 23)}


def test_bad_input_is_a_clear_error(index, searcher, splade_tiny, tmp_path):
    with pytest.raises(DocumentNotFoundError, match="'nope' is not in the index"):
        searcher.explain("fox", "nope", provenance=True)
    with IndexWriter(index) as w:
        w.add([Document("d4", "temporary fox")])
    with IndexWriter(index) as w:
        w.delete(["d4"])
    searcher.refresh()
    with pytest.raises(DocumentNotFoundError, match="absent or deleted"):
        searcher.explain("fox", "d4", provenance=True)
    bare = tmp_path / "bare"
    with IndexWriter(bare, splade_tiny, store=False) as w:
        w.add(DOCS)
    with pytest.raises(ProvenanceError, match="--no-store"):
        Searcher(bare, splade_tiny).explain("fox", "d2", provenance=True)
    assert Searcher(bare, splade_tiny).explain("fox", "d2")  # plain explain still works


def test_cli_highlights_source_words(index, capsys):
    capsys.readouterr()
    assert main(["search", str(index), "whale fox", "-k", "1", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "[whale]" in out and "[fox]" in out and "doc: whale" in out
    assert main(["search", str(index), "whale fox", "-k", "1", "--explain", "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    whale = next(c for c in res["hits"][0]["explain"] if c["term"] == "whale")
    assert whale["doc_sources"][0]["start"] == DOCS[1].text.index("whale")


def test_cli_without_store_notes_and_explains(splade_tiny, tmp_path, capsys):
    bare = tmp_path / "bare"
    with IndexWriter(bare, splade_tiny, store=False) as w:
        w.add(DOCS)
    capsys.readouterr()
    assert main(["search", str(bare), "whale fox", "-k", "1", "--explain"]) == 0
    out, err = capsys.readouterr()
    assert "--no-store" in err and " x " in out


@pytest.mark.parametrize("kw", [{"mode": "plain", "attention": "bidirectional"}, {"mode": "plain"}, {"mode": "echo"}])
def test_llm_positions_follow_the_shift(kw):
    from sparseir.encoders.llm import LLMSparseEncoder

    enc = LLMSparseEncoder(str(SMOLLM), **kw)
    text = "The quick brown fox jumps over the lazy dog."
    vec = enc.encode_document(text)
    sources = enc.provenance(text)
    assert set(sources) == set(vec.indices)
    tokens = {m.span() for m in re.finditer(r"\w+|[^\w\s]", text)}
    for dim, w in zip(vec.indices, vec.data):
        (src,) = sources[dim]
        assert src.weight == pytest.approx(float(w), rel=1e-4)
        assert text[src.start:src.end] == src.token and (src.start, src.end) in tokens
    # Bidirectional (MNTP): the output at i - 1 stands for token i, so "fox" is sourced at the word
    # itself. Causal: each position predicts the next token, so "fox" comes from a word before it.
    (fox,) = sources[enc.terms.index("fox")]
    if enc.bidirectional:
        assert fox.token == "fox"
    else:
        assert fox.end <= text.index("fox")


def test_llm_prompt_mode_has_no_source_tokens():
    from sparseir.encoders.llm import LLMSparseEncoder

    with pytest.raises(ProvenanceError, match="prompt mode"):
        LLMSparseEncoder(str(SMOLLM), mode="prompt").provenance("a fox")


@pytest.fixture(scope="module")
def sae_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae")
    return {kind: train_tiny_sae(root, kind) for kind in ("hidden", "embedding")}


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_hidden_state_sae_features_point_at_tokens(sae_dirs, pooling):
    from sparseir.encoders.sae import SAESparseEncoder

    enc = SAESparseEncoder(sae_dirs["hidden"], pooling=pooling, normalize=True)
    text = DOCS[2].text
    vec = enc.encode_document(text)
    sources = enc.provenance(text)
    assert vec.nnz and set(sources) == set(vec.indices)
    for dim, w in zip(vec.indices, vec.data):
        assert all(text[s.start:s.end] == s.token for s in sources[dim])
        total = sources[dim][0].weight if pooling == "max" else sum(s.weight for s in sources[dim])
        assert total == pytest.approx(float(w), rel=1e-4)


def test_embedding_sae_says_it_has_no_source_tokens(sae_dirs, tmp_path):
    from sparseir.encoders.sae import SAESparseEncoder

    enc = SAESparseEncoder(sae_dirs["embedding"])
    with pytest.raises(ProvenanceError, match="no source tokens"):
        enc.provenance("a fox")
    with IndexWriter(tmp_path / "ix", enc, quantize="float32") as w:
        w.add(DOCS)
    with pytest.raises(ProvenanceError, match="sentence embedding"):
        Searcher(tmp_path / "ix", enc).explain("fox", "d2", provenance=True)


@pytest.fixture(scope="module")
def server(index):
    from sparseir.serve.process import ServerProcess

    with ServerProcess(index) as s:
        yield s


def test_service_explains_with_source_words(server, searcher):
    import httpx

    from sparseir.client import Client

    with Client(server.url) as client:
        remote = client.explain("whale fox", "d2", provenance=True)
        assert remote == searcher.explain("whale fox", "d2", provenance=True)
        assert client.explain("whale fox", "d2") == searcher.explain("whale fox", "d2")
    r = httpx.post(f"{server.url}/explain", json={"query": {"fox": 1.0}, "doc_id": "d2", "provenance": True})
    assert r.status_code == 422 and "text query" in r.text
    r = httpx.post(f"{server.url}/explain", json={"query": "fox", "doc_id": "nope", "provenance": True})
    assert r.status_code == 404


def test_search_page_marks_source_words(server):
    from urllib.parse import quote

    from serve_browser import CHROMIUM, chromium

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed; the search page is not tested here")
    dom = chromium("--dump-dom", f"{server.url}/?q={quote('whale fox')}&k=2&term=whale").stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert re.search(r'id="query-view"[^>]*>\s*<mark>whale</mark> fox', dom), dom[-3000:]
    item = re.search(r'<li class="hit" data-doc-id="d2">(.*?)</li>', dom, flags=re.S).group(1)
    assert "<mark>whale</mark>" in item


def test_sharded_engine_explains_with_source_words(searcher, splade_tiny, tmp_path):
    from sparseir.distributed import ShardedWriter
    from sparseir.serve.sharded import ShardedEngine

    with ShardedWriter(tmp_path / "sh", splade_tiny, shards=2) as w:
        w.add(DOCS)
    engine = ShardedEngine(tmp_path / "sh", read_only=True)
    try:
        [vector] = engine.encode_queries(["whale fox"])
        remote = engine.explain(vector, "d2", "whale fox")
        local = searcher.explain("whale fox", "d2", provenance=True)
        assert [(c.term, c.query_sources, c.doc_sources) for c in remote] == \
            [(c.term, c.query_sources, c.doc_sources) for c in local]
        assert engine.explain(vector, "d2")[0].doc_sources is None
    finally:
        engine.close()

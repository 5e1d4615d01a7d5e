"""`sparseir serve` as a real process on a loopback port: results equal the library's, bad requests are 4xx.

Every request loop here is bounded in count (and each request by a timeout) and targets 127.0.0.1.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from sparseir.cli import main
from sparseir.client import Client, ServerError
from sparseir.corpus import load_queries
from sparseir.indexing import build_index
from sparseir.search import ApproxParams, ApproxSearcher, Searcher
from sparseir.serve.models import MAX_K, MAX_QUERIES
from sparseir.serve.process import ServerProcess

from serve_browser import chromium, needs_chromium

API_KEY = "test-key-123"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, scifact_slice, splade_tiny):
    from sparseir.corpus import load_corpus

    out = tmp_path_factory.mktemp("serve") / "idx"
    build_index(load_corpus(str(scifact_slice)), splade_tiny, out, show_progress_bar=False)
    return out


@pytest.fixture(scope="module")
def queries(scifact_slice) -> dict[str, str]:
    return dict(list(load_queries(str(scifact_slice)).items())[:24])


@pytest.fixture(scope="module")
def library(index_dir, splade_tiny) -> Searcher:
    return Searcher(index_dir, splade_tiny)


@pytest.fixture(scope="module")
def server(index_dir):
    with ServerProcess(index_dir, "--api-key", API_KEY) as s:
        yield s


@pytest.fixture
def client(server):
    with Client(server.url) as c:
        yield c


def _same(hits_a, hits_b) -> None:
    assert [h.doc_id for h in hits_a] == [h.doc_id for h in hits_b]
    assert [h.score for h in hits_a] == pytest.approx([h.score for h in hits_b], rel=1e-6, abs=1e-6)


def test_search_equals_library(client, library, queries):
    for text in queries.values():
        _same(client.search(text, k=10), library.search(text, k=10))
    remote, local = client.batch_search(queries, k=7), library.batch_search(queries, k=7)
    assert list(remote) == list(local)
    for qid in queries:
        _same(remote[qid], local[qid])
    as_list = client.batch_search(list(queries.values())[:3], k=5)
    assert list(as_list) == ["0", "1", "2"]


def test_vector_query_and_encode_equal_library(client, library, queries, splade_tiny):
    text = next(iter(queries.values()))
    vector = client.encode(text)
    assert vector == pytest.approx(dict(splade_tiny.decode(splade_tiny.encode_query([text]).toarray()[0])), rel=1e-6)
    _same(client.search(vector, k=10), library.search(vector, k=10))
    doc_vector = client.encode(text, kind="document")
    assert doc_vector == pytest.approx(dict(splade_tiny.decode(splade_tiny.encode_document([text]).toarray()[0])),
                                       rel=1e-6)


def test_approx_equals_library(client, index_dir, splade_tiny, queries):
    knobs = {"query_cut": 4, "candidates": 20}
    local = ApproxSearcher(index_dir, splade_tiny, ApproxParams(**knobs))
    for text in list(queries.values())[:8]:
        _same(client.search(text, k=10, approx=knobs), local.search(text, k=10))


def test_explain_equals_library(client, library, queries):
    text = next(iter(queries.values()))
    result = client.search_raw(text, k=3, explain=True, explain_terms=1000)
    for hit in result["hits"]:
        local = library.explain(text, hit["doc_id"])
        assert [c["term"] for c in hit["explain"]] == [c.term for c in local]
        assert sum(c["product"] for c in hit["explain"]) == pytest.approx(hit["score"], rel=1e-4)
        remote = client.explain(text, hit["doc_id"])
        assert [c.term for c in remote] == [c.term for c in local]
        assert [c.product for c in remote] == pytest.approx([c.product for c in local], rel=1e-6)
    capped = client.search_raw(text, k=1, explain=True, explain_terms=2)
    assert len(capped["hits"][0]["explain"]) <= 2


def test_concurrent_clients_get_the_library_results(server, library, queries):
    """8 threads x 6 requests: the searcher pool and the encoding micro-batcher keep results exact."""
    texts = list(queries.values())
    expected = {t: library.search(t, k=10) for t in texts}
    errors: list[str] = []

    def worker(offset: int) -> None:
        with Client(server.url) as c:
            for i in range(6):
                text = texts[(offset * 6 + i) % len(texts)]
                hits = c.search(text, k=10)
                if [h.doc_id for h in hits] != [h.doc_id for h in expected[text]]:
                    errors.append(text)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    batching = httpx.get(f"{server.url}/stats", timeout=10).json()["encode_batching"]
    assert batching["items"] >= 48 and batching["largest"] >= 1


@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"query": "a", ', 400, "malformed JSON"),
    (b"not json at all", 400, "malformed JSON"),
    (json.dumps({"query": "a", "k": 0}).encode(), 422, "k: Input should be greater than or equal to 1"),
    (json.dumps({"query": "a", "k": MAX_K + 1}).encode(), 422, f"k: Input should be less than or equal to {MAX_K}"),
    (json.dumps({"query": "a", "colour": "red"}).encode(), 422, "colour: Extra inputs are not permitted"),
    (json.dumps({"query": "a", "approx": {"query_cutt": 3}}).encode(), 422, "approx.query_cutt: Extra inputs"),
    (json.dumps({"query": "a", "approx": {"heap_factor": 2}}).encode(), 422, "approx.heap_factor"),
    (json.dumps({"queries": ["a"] * (MAX_QUERIES + 1)}).encode(), 422, f"at most {MAX_QUERIES} items"),
    (json.dumps({"queries": []}).encode(), 422, "queries"),
    (json.dumps({"query": "a", "queries": ["b"]}).encode(), 422, "exactly one of 'query'"),
    (json.dumps({}).encode(), 422, "exactly one of 'query'"),
    (json.dumps({"query": 5}).encode(), 422, "query"),
    (json.dumps({"query": {"vitamin": -1.0}}).encode(), 422, "greater than or equal to 0"),
    (json.dumps({"query": {"no-such-term-xyz": 1.0}}).encode(), 400, "not in the encoder's vocabulary"),
    (json.dumps([1, 2]).encode(), 422, "invalid request"),
])
def test_bad_search_requests_are_4xx(server, body, status, message):
    r = httpx.post(f"{server.url}/search", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_other_bad_requests_are_4xx(server):
    url = server.url
    huge = json.dumps({"query": "x" * (17 << 20)}).encode()  # over the 16 MiB default body limit
    r = httpx.post(f"{url}/search", content=huge, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "error" in r.json()
    chunks = (b"x" * (1 << 20) for _ in range(17))  # chunked: no Content-Length to check up front
    r = httpx.post(f"{url}/search", content=chunks, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    r = httpx.post(f"{url}/explain", json={"query": "vitamin", "doc_id": "no-such-doc"}, timeout=30)
    assert r.status_code == 404 and "no-such-doc" in r.json()["error"]
    r = httpx.post(f"{url}/encode", json={"text": "a", "kind": "image"}, timeout=30)
    assert r.status_code == 422 and "kind" in r.json()["error"]
    r = httpx.get(f"{url}/no/such/route", timeout=30)
    assert r.status_code == 404 and r.json()["error"]
    r = httpx.put(f"{url}/search", json={"query": "a"}, timeout=30)
    assert r.status_code == 405
    r = httpx.post(f"{url}/documents", content=b'{"documents": [', headers={"X-API-Key": API_KEY,
                   "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    stats = httpx.get(f"{url}/stats", timeout=30).json()
    assert not [route for route, s in stats["requests"].items() if "500" in s["by_status"]]


def test_curl_style_form_content_type_is_read_as_json(server):
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; read endpoints take it as JSON."""
    r = httpx.post(f"{server.url}/search", content=b'{"query": "vitamin D", "k": 2}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def test_writes_need_the_api_key(server):
    doc = {"documents": [{"id": "x1", "text": "a new document"}]}
    for headers in ({}, {"X-API-Key": "wrong"}):
        r = httpx.post(f"{server.url}/documents", json=doc, headers=headers, timeout=30)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert httpx.post(f"{server.url}/commit", headers=headers, timeout=30).status_code == 401
        assert httpx.delete(f"{server.url}/documents/x1", headers=headers, timeout=30).status_code == 401
        r = httpx.post(f"{server.url}/documents/delete", json={"ids": ["x1"]}, headers=headers, timeout=30)
        assert r.status_code == 401
    with pytest.raises(ServerError) as e:
        Client(server.url).commit()
    assert e.value.status == 401
    # reads need no key
    assert httpx.post(f"{server.url}/search", json={"query": "a"}, timeout=30).status_code == 200


def test_health_stats_docs(server, library):
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok"
    stats = httpx.get(f"{server.url}/stats", timeout=30).json()
    assert stats["n_docs"] == library.index.n_docs and stats["n_dims"] == library.index.n_dims
    assert "generation" in stats and stats["requests"]["GET /health"]["requests"] >= 1
    assert set(stats["requests"]["GET /health"]["latency_ms"]) >= {"p50", "p90", "p99"}
    assert httpx.get(f"{server.url}/docs", timeout=30).status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/search", "/encode", "/explain", "/documents", "/documents/{doc_id}", "/commit", "/health",
            "/stats"} <= set(paths)
    page = httpx.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{server.url}/static/app.js", timeout=30).status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(index_dir, sig):
    server = ServerProcess(index_dir, "--read-only").start()
    try:
        assert httpx.post(f"{server.url}/search", json={"query": "a"}, timeout=30).status_code == 200
        assert server.stop(sig) == 0
        out = server.output()
        assert "Traceback" not in out and "Error" not in out, out
    finally:
        server.kill()
        server.log.unlink(missing_ok=True)


def test_read_only_workers(index_dir, library, queries):
    """--workers 2 --read-only: two processes behind one port, both answering as the library does."""
    server = ServerProcess(index_dir, "--read-only", "--workers", "2").start()
    try:
        with Client(server.url) as c:
            for text in list(queries.values())[:6]:
                _same(c.search(text, k=5), library.search(text, k=5))
            assert c.health()["read_only"]
        assert server.stop() == 0
        assert "Traceback" not in server.output()
    finally:
        server.kill()
        server.log.unlink(missing_ok=True)


def test_cli_rejects_bad_options(tmp_path, index_dir, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["serve", str(index_dir), "--workers", "2"]) == 2
    assert "--read-only" in capsys.readouterr().err
    assert main(["serve", str(index_dir), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", str(index_dir), "--batch-wait-ms", "-1"]) == 2
    assert "--batch-wait-ms" in capsys.readouterr().err


def test_cli_module_imports_nothing_heavy():
    import sys

    code = ("import sys, sparseir.serve.cli; heavy = {'fastapi', 'uvicorn', 'torch', 'numba', 'httpx'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# --- the search page in a real browser (headless Chromium from Debian's package) ----------------------
PAGE_QUERY = "vitamin D and bone fractures"


@needs_chromium
def test_search_page_renders_results_and_charts(server, client):
    url = f"{server.url}/?q={quote(PAGE_QUERY)}&k=5"
    dom = chromium("--dump-dom", url).stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    expected = client.search_raw(PAGE_QUERY, k=5, explain=True, explain_terms=12)["hits"]
    items = re.findall(r'<li class="hit" data-doc-id="([^"]+)">(.*?)</li>', dom, flags=re.S)
    assert [doc_id for doc_id, _ in items] == [h["doc_id"] for h in expected]
    for (_, html), hit in zip(items, expected):
        assert f"{hit['score']:.4f}" in html
        terms = re.findall(r'<span class="bar-term">([^<]*)</span>', html)
        assert terms == [html_lib.escape(c["term"], quote=False) for c in hit["explain"]]
        assert len(re.findall(r'class="bar" style="display:block;width:', html)) == len(terms)


@needs_chromium
def test_search_page_screenshot(server, tmp_path):
    """A real screenshot: the right size, with the bar chart's colour in it (not a blank page)."""
    from PIL import Image

    shot = tmp_path / "search-page.png"
    chromium("--window-size=1280,1200", f"--screenshot={shot}", f"{server.url}/?q={quote(PAGE_QUERY)}&k=5")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1200)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50
    bar = (0x60, 0xA5, 0xFA)
    assert sum(n for n, c in colours if c == bar) > 1000, "no bar chart drawn"
    if os.environ.get("SPARSEIR_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "search-page.png")

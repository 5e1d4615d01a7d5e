"""`sparseir serve` writes on a live index: add/search/delete, commits seen without a restart, kill -9.

A real server process on a free 127.0.0.1 port; every request loop is bounded in count and time.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from sparseir.client import Client, ServerError
from sparseir.corpus import Document, load_corpus
from sparseir.serve.models import MAX_DOCS
from sparseir.serve.process import ServerProcess

from serve_browser import chromium, needs_chromium


class NEW:  # the document added in these tests (a Document is built per test: it needs issue 10's fields)
    id = "new-1"
    text = "Quokkas and xylophones in the zebra enclosure of a marsupial zoo"
    title = "Quokka zoo"

    @classmethod
    def doc(cls, title: str | None = None, doc_id: str | None = None) -> Document:
        return Document(doc_id or cls.id, cls.text, title or cls.title, {"year": 2026})


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, scifact_slice, splade_tiny):
    from sparseir.indexing import build_index

    out = tmp_path_factory.mktemp("serve-live") / "idx"
    build_index(load_corpus(str(scifact_slice)), splade_tiny, out, show_progress_bar=False)
    return out


@pytest.fixture
def index_copy(base_index, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(base_index, out)
    return out


@pytest.fixture(scope="module")
def writable(base_index, tmp_path_factory):
    """One writable server for the tests below; each adds documents under its own ids."""
    out = tmp_path_factory.mktemp("serve-writable") / "idx"
    shutil.copytree(base_index, out)
    with ServerProcess(out, "--refresh-seconds", "0.2") as server:
        yield server


def _ids(hits) -> list[str]:
    return [h.doc_id for h in hits]


def test_add_search_get_update_delete(writable):
    with Client(writable.url) as c:
        assert NEW.id not in _ids(c.search(NEW.text, k=10))
        assert c.add([NEW.doc()]) == 1
        assert _ids(c.search(NEW.text, k=10))[0] == NEW.id
        doc = c.doc(NEW.id)
        assert doc["title"] == NEW.title and doc["text"] == NEW.text and doc["year"] == 2026
        with pytest.raises(ServerError) as e:  # the id exists: a plain add is refused
            c.add([NEW.doc()])
        assert e.value.status == 400 and "already in the index" in str(e.value)
        c.update([NEW.doc("Renamed")])
        assert c.doc(NEW.id)["title"] == "Renamed"
        hit = c.search_raw(NEW.text, k=1, fields=["title", "year"])["hits"][0]
        assert hit["doc"] == {"title": "Renamed", "year": 2026}
        assert c.delete([NEW.id, "never-there"]) == ["never-there"]
        assert NEW.id not in _ids(c.search(NEW.text, k=10))
        assert c.doc(NEW.id) is None
        assert httpx.delete(f"{writable.url}/documents/{NEW.id}", timeout=30).status_code == 404


def test_add_with_vectors(writable):
    with Client(writable.url) as c:
        vector = {"zebra": 2.5, "vitamin": 2.5}  # no SciFact document of the slice has both
        c.add([Document("vec-1", "", "A vector")], vectors=[vector])
        assert _ids(c.search(vector, k=1)) == ["vec-1"]
        r = httpx.post(f"{writable.url}/documents", json={"documents": [{"id": "v2", "vector": {"zzzz-nope": 1}}]},
                       timeout=30)
        assert r.status_code == 400 and "vocabulary" in r.json()["error"]


def test_commit_false_is_visible_after_commit(writable):
    with Client(writable.url) as c:
        generation = c.health()["generation"]
        c.add([NEW.doc(doc_id="batched-1")], commit=False)
        time.sleep(0.5)  # a refresh finds no new commit
        assert "batched-1" not in _ids(c.search(NEW.text, k=10))
        assert c.commit() > generation
        assert "batched-1" in _ids(c.search(NEW.text, k=3))


def test_server_sees_commits_of_another_writer(index_copy):
    from sparseir.index import IndexWriter

    with ServerProcess(index_copy, "--read-only", "--refresh-seconds", "0.2") as server, Client(server.url) as c:
        assert httpx.post(f"{server.url}/commit", timeout=30).status_code == 403
        with IndexWriter(index_copy) as w:
            w.add([NEW.doc()])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and NEW.id not in _ids(c.search(NEW.text, k=3)):
            time.sleep(0.2)
        assert _ids(c.search(NEW.text, k=3))[0] == NEW.id


def test_bad_write_requests(writable):
    url = writable.url
    cases = [
        ({"documents": []}, 422, "documents"),
        ({"documents": [{"id": ""}]}, 422, "documents.0.id"),
        ({"documents": [{"id": "a", "txt": "typo"}]}, 422, "Extra inputs"),
        ({"documents": [{"id": "a", "vector": {"d": 1}}, {"id": "b"}]}, 422, "every document"),
        ({"documents": [{"id": f"d{i}"} for i in range(MAX_DOCS + 1)]}, 422, f"at most {MAX_DOCS}"),
        ({"documents": [{"id": "a"}, {"id": "a"}]}, 400, "duplicate document id"),
    ]
    for body, status, message in cases:
        r = httpx.post(f"{url}/documents", json=body, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]
    r = httpx.post(f"{url}/documents", content=b'{"documents": [{"id": "a"}]}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 422  # writes insist on a JSON content type (no cross-site form posts)


def test_kill_9_during_adds_keeps_every_acknowledged_document(index_copy):
    """Adds in a loop; kill -9 mid-stream, three times; after each restart every acknowledged doc is there."""
    from sparseir.index import open_index

    acknowledged: list[str] = []
    for round_ in range(3):
        server = ServerProcess(index_copy).start()
        stop = threading.Event()

        def writer() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for n in range(200):  # bounded; killed long before
                    if stop.is_set():
                        return
                    ids = [f"r{round_}-{n}-{j}" for j in range(5)]
                    docs = [{"id": i, "text": f"durability document {i}", "title": i} for i in ids]
                    try:
                        r = http.post("/documents", json={"documents": docs})
                    except httpx.TransportError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        acknowledged.extend(ids)

        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([a for a in acknowledged if a.startswith(f"r{round_}-")]) < 15:
            time.sleep(0.05)
        time.sleep(0.1 * round_)  # vary the instant of the kill
        server.kill()
        stop.set()
        t.join(timeout=60)
        server.log.unlink(missing_ok=True)
        assert any(a.startswith(f"r{round_}-") for a in acknowledged)

        index = open_index(index_copy, verify=True)
        index.verify()
        missing = [i for i in acknowledged if index.doc(i) is None]
        assert not missing, f"acknowledged but lost after kill -9: {missing[:5]}"

    with ServerProcess(index_copy) as server, Client(server.url) as c:
        assert all(c.doc(i) is not None for i in acknowledged[::7])
        assert acknowledged[-1] in _ids(c.search(f"durability document {acknowledged[-1]}", k=5))


@needs_chromium
def test_search_page_shows_titles_and_the_document_view(writable):
    text = "Platypus venom spurs and electroreception in monotremes"
    with Client(writable.url) as c:
        c.add([Document("page-1", text, "Platypus page", {"year": 2026})])
    dom = chromium("--dump-dom", f"{writable.url}/?q={quote(text)}&k=3&doc=page-1").stdout
    assert 'data-ready="1"' in dom
    first = re.search(r'<li class="hit" data-doc-id="([^"]+)">(.*?)</li>', dom, flags=re.S)
    assert first.group(1) == "page-1" and "Platypus page" in first.group(2) and "monotremes" in first.group(2)
    view = re.search(r'<aside id="doc-view"([^>]*)>(.*?)</aside>', dom, flags=re.S)
    assert "hidden" not in view.group(1)
    assert "Platypus page" in view.group(2) and text in view.group(2) and "2026" in view.group(2)

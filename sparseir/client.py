"""A Python client for ``sparseir serve``, with the library's names.

>>> from sparseir.client import Client
>>> with Client("http://127.0.0.1:8080") as c:                      # doctest: +SKIP
...     hits = c.search("vitamin D and bone fractures", k=5)        # [Hit(doc_id, score), ...]
...     c.add([Document("d1", "some text", "A title")])              # durable when it returns
...     c.delete(["d1"])

Searches return :class:`~sparseir.search.Hit` tuples and explanations
:class:`~sparseir.search.Contribution` tuples, as :class:`~sparseir.search.Searcher` does. A
request the server refuses raises :class:`ServerError` with the server's message and status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from .corpus import Document
from .errors import SparseirError
from .search import Contribution, Hit

Query = str | Mapping[str, float]


class ServerError(SparseirError):
    """The server answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Client:
    """Talk to a ``sparseir serve`` at ``url``. ``api_key`` is sent with every request (writes need it)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", api_key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self._http.request(method, path, json=body, params=params or None)
        if response.is_error:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ServerError(response.status_code, message)
        return response.json()

    # --- reading -------------------------------------------------------------------------
    def search(self, query: Query, k: int = 10, *, approx: Mapping[str, Any] | None = None) -> list[Hit]:
        """Top-k hits of one query (a text or ``{term: weight}``); ``approx``: knobs of the approximate mode."""
        body = {"query": query, "k": k, **({"approx": dict(approx)} if approx is not None else {})}
        return [Hit(h["doc_id"], h["score"]) for h in self._call("POST", "/search", body)["hits"]]

    def search_raw(self, query: Query, k: int = 10, **options: Any) -> dict:
        """The server's whole answer for one query, with ``explain``, ``fields``, ``approx`` options."""
        return self._call("POST", "/search", {"query": query, "k": k, **options})

    def batch_search(self, queries: Mapping[str, Query] | Sequence[Query], k: int = 10, *,
                     approx: Mapping[str, Any] | None = None) -> dict[str, list[Hit]]:
        """Top-k for many queries; a list is keyed ``"0"``, ``"1"``, ... as the library does."""
        body = {"queries": dict(queries) if isinstance(queries, Mapping) else list(queries), "k": k,
                **({"approx": dict(approx)} if approx is not None else {})}
        return {r["qid"]: [Hit(h["doc_id"], h["score"]) for h in r["hits"]]
                for r in self._call("POST", "/search", body)["results"]}

    def explain(self, query: Query, doc_id: str, provenance: bool = False) -> list[Contribution]:
        """Each dimension shared by the query and ``doc_id``, largest contribution first; with ``provenance``,
        each side's source words (see :meth:`sparseir.search.Searcher.explain`)."""
        body = {"query": query, "doc_id": doc_id, **({"provenance": True} if provenance else {})}
        return [Contribution.from_dict(c) for c in self._call("POST", "/explain", body)["explain"]]

    def encode(self, text: str, kind: str = "query") -> dict[str, float]:
        """A text's sparse vector as ``{term: weight}``."""
        return self._call("POST", "/encode", {"text": text, "kind": kind})["vector"]

    def doc(self, doc_id: str) -> dict | None:
        """The stored document, or ``None`` if the index has no such id."""
        try:
            return self._call("GET", f"/documents/{quote(doc_id, safe='')}")
        except ServerError as e:
            if e.status == 404:
                return None
            raise

    def health(self) -> dict:
        return self._call("GET", "/health")

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    # --- writing -------------------------------------------------------------------------
    def add(self, docs: Iterable[Document | tuple], vectors: Sequence[Mapping[str, float]] | None = None, *,
            upsert: bool = False, commit: bool = True) -> int:
        """Add documents (encoded on the server, or with ``{term: weight}`` ``vectors``); returns the count.

        With ``commit`` (default) the documents are durable when this returns; else call :meth:`commit`.
        """
        docs = [Document(*d) for d in docs]
        if vectors is not None and len(vectors) != len(docs):
            raise ValueError(f"{len(docs)} documents but {len(vectors)} vectors")
        body = [{"id": d.id, "text": d.text, "title": d.title, **({"fields": d.fields} if d.fields else {}),
                 **({"vector": dict(vectors[i])} if vectors is not None else {})} for i, d in enumerate(docs)]
        return self._call("POST", "/documents", {"documents": body, "upsert": upsert, "commit": commit})["added"]

    def update(self, docs: Iterable[Document | tuple], vectors: Sequence[Mapping[str, float]] | None = None, *,
               commit: bool = True) -> int:
        """Add or replace documents by id (an upsert)."""
        return self.add(docs, vectors, upsert=True, commit=commit)

    def delete(self, ids: Iterable[str], *, commit: bool = True) -> list[str]:
        """Delete documents; returns the ids that were not found."""
        return self._call("POST", "/documents/delete", {"ids": list(ids), "commit": commit})["not_found"]

    def commit(self) -> int:
        """Make every acknowledged write durable; returns the commit generation."""
        return self._call("POST", "/commit")["generation"]

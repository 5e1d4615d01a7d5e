"""The FastAPI application: endpoints, JSON errors, limits, API key, the search page.

``create_app(config)`` builds it; the index and encoder are loaded when the app starts (uvicorn's
lifespan), so the first request is served warm. Searches, explanations and stored-document reads
run in a thread pool (the Numba kernels release the GIL); query texts of concurrent requests are
encoded together by a :class:`~sparseir.serve.batcher.MicroBatcher`; writes run one at a time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import scipy.sparse as sp
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..corpus import Document
from ..errors import SparseirError
from .batcher import MicroBatcher
from .config import ServeConfig
from .engine import Engine, ReadOnlyError, open_engine
from .metrics import Metrics
from .models import AddRequest, DeleteRequest, EncodeRequest, ExplainRequest, SearchRequest

STATIC = Path(__file__).parent / "static"
#: Read-only endpoints whose JSON body is accepted whatever its Content-Type (``curl -d`` sends a form
#: type). Writes insist on ``application/json``: a cross-site form cannot send it without a preflight.
LENIENT_JSON_PATHS = frozenset({"/search", "/encode", "/explain"})


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


class _Observe:
    """ASGI middleware: per-route counts and latencies, the body size limit (a JSON 413), and a lenient
    JSON Content-Type on read endpoints."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] in LENIENT_JSON_PATHS:
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        start = time.perf_counter()
        status = 500
        too_large = HTTPException(413, f"request body over the limit of {self.max_body_bytes} bytes "
                                       "(sparseir serve --max-body-mb)")
        received = 0

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise too_large
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body_bytes:
                await _error(413, too_large.detail)(scope, receive, send_status)
            else:
                await self.app(scope, receive_limited, send_status)
        finally:
            route = scope.get("route")
            name = f"{scope['method']} {route.path if route is not None else 'unrouted'}"
            self.metrics.record(name, status, time.perf_counter() - start)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        return 400, f"malformed JSON body: {e.get('ctx', {}).get('error', 'decode error')} at character {e['loc'][-1]}"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid request: " + "; ".join(parts) + more


def create_app(config: ServeConfig) -> FastAPI:
    """The application serving ``config.index``."""
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["started"] = time.time()
        pool = ThreadPoolExecutor(config.search_threads, thread_name_prefix="search")
        encoding = ThreadPoolExecutor(1, thread_name_prefix="encode")  # one forward pass at a time
        writing = ThreadPoolExecutor(1, thread_name_prefix="write")    # one writer
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(pool, partial(open_engine, config))
        batcher = MicroBatcher(engine.encode_queries, encoding, max_batch=config.max_encode_batch,
                               max_wait=config.batch_wait_ms / 1000)
        batcher.start()
        state.update(engine=engine, pool=pool, encoding=encoding, writing=writing, batcher=batcher)
        refresher = asyncio.create_task(_refresh_loop(engine, pool)) if config.refresh_seconds else None
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
                await asyncio.gather(refresher, return_exceptions=True)
            await batcher.close()
            await loop.run_in_executor(writing, engine.close)
            for executor in (pool, encoding, writing):
                executor.shutdown(wait=True)

    async def _refresh_loop(engine: Engine, pool: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(config.refresh_seconds)
            await loop.run_in_executor(pool, engine.refresh)

    app = FastAPI(
        title="sparseir", lifespan=lifespan,
        description="Learned-sparse search over one index. Every score can be explained: `explain` lists "
                    "the shared dimensions, `query_weight x doc_weight` each. The search page is at `/`.")
    app.add_middleware(_Observe, metrics=metrics, max_body_bytes=config.max_body_bytes)

    # --- errors: JSON with a message, 4xx for anything the client did ----------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, message, details=[{k: e.get(k) for k in ("loc", "msg", "type")} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(ReadOnlyError)
    async def _read_only(request: Request, exc: ReadOnlyError) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(SparseirError)
    async def _user_error(request: Request, exc: SparseirError) -> JSONResponse:
        return _error(404 if isinstance(exc, KeyError) else 400, str(exc))

    # --- helpers --------------------------------------------------------------------------------
    def engine() -> Engine:
        return state["engine"]

    async def run(executor: str, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(state[executor], partial(fn, *args))

    async def vectors_of(queries: list[str | dict[str, float]]) -> list[sp.csr_matrix]:
        batcher: MicroBatcher = state["batcher"]
        return await asyncio.gather(*(batcher.submit(q) if isinstance(q, str) else _vector(q) for q in queries))

    async def _vector(weights: dict[str, float]) -> sp.csr_matrix:
        return engine().vector(weights)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required for writes when the "
                                  "server was started with --api-key (or SPARSEIR_API_KEY)")

    async def writer_key(key: str | None = Depends(api_key_header)) -> None:
        if config.api_key is not None and not (key and secrets.compare_digest(key, config.api_key)):
            raise HTTPException(401, "writes need the API key: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "APIKey"})
        if engine().read_only:
            raise ReadOnlyError("this server is read-only (--read-only, or a sparseir without the live index)")

    # --- reading --------------------------------------------------------------------------------
    @app.get("/health", summary="liveness and the commit generation served")
    async def health() -> dict:
        e = engine()
        return {"status": "ok", "generation": e.generation, "read_only": e.read_only}

    @app.get("/stats", summary="index statistics, commit generation, request counters, latency percentiles")
    async def stats() -> dict:
        return {**await run("pool", engine().stats), "uptime_s": round(time.time() - state["started"], 3),
                "requests": metrics.snapshot(), "encode_batching": state["batcher"].stats()}

    @app.post("/search", summary="one query or a batch, exact or approximate, with explanations and stored fields")
    async def search(req: SearchRequest) -> dict:
        start = time.perf_counter()
        if req.query is not None:
            qids, queries = None, [req.query]
        elif isinstance(req.queries, dict):
            qids, queries = list(req.queries), list(req.queries.values())
        else:
            qids, queries = [str(i) for i in range(len(req.queries))], req.queries
        vectors = await vectors_of(queries)
        approx = req.approx.model_dump() if req.approx is not None else None
        results = await run("pool", _search_with_fields, vectors, req.k, approx,
                            req.explain_terms if req.explain else 0, req.fields)
        e = engine()
        took = round((time.perf_counter() - start) * 1000, 3)
        if qids is None:
            return {"hits": results[0], "generation": e.generation, "took_ms": took}
        return {"results": [{"qid": q, "hits": hits} for q, hits in zip(qids, results)], "generation": e.generation,
                "took_ms": took}

    def _search_with_fields(vectors, k, approx, explain, fields) -> list[list[dict]]:
        e = engine()
        out = []
        for hits in e.search(vectors, k, approx, explain):
            rows = []
            for rank, (hit, contributions) in enumerate(hits, 1):
                row: dict[str, Any] = {"rank": rank, "doc_id": hit.doc_id, "score": hit.score}
                if explain:
                    row["explain"] = [c.to_dict() for c in contributions]
                if fields:
                    doc = e.doc(hit.doc_id) or {}
                    row["doc"] = {f: doc.get(f) for f in fields if f in doc}
                rows.append(row)
            out.append(rows)
        return out

    @app.post("/explain", summary="the dimensions behind one document's score for a query")
    async def explain(req: ExplainRequest) -> dict:
        [vector] = await vectors_of([req.query])
        text = req.query if req.provenance else None
        try:  # provenance re-encodes the query and the document: the encoding pool's work
            contributions = await run("encoding" if text else "pool", engine().explain, vector, req.doc_id, text)
        except KeyError:
            raise HTTPException(404, f"document {req.doc_id!r} is not in the index") from None
        return {"doc_id": req.doc_id, "score": sum(c.product for c in contributions),
                "explain": [c.to_dict() for c in contributions]}

    @app.post("/encode", summary="sparse vectors as {term: weight}")
    async def encode(req: EncodeRequest) -> dict:
        e = engine()
        texts = [req.text] if req.text is not None else req.texts
        if req.kind == "query":
            rows = await vectors_of(texts)
            matrix = sp.vstack(rows, format="csr")
        else:
            matrix = await run("encoding", e.encoder.encode_document, texts)
        vectors = [dict(e.encoder.decode(matrix[i].toarray()[0])) for i in range(matrix.shape[0])]
        return {"vector": vectors[0]} if req.text is not None else {"vectors": vectors}

    @app.get("/documents/{doc_id:path}", summary="a stored document")
    async def get_document(doc_id: str) -> dict:
        doc = await run("pool", engine().doc, doc_id)
        if doc is None:
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return doc

    @app.get("/inspect", summary="one dimension: its top documents, document frequency, weights, SAE label")
    async def inspect(term: str = Param(..., min_length=1, max_length=256, description="a term or SAE feature"),
                      top: int = Param(10, ge=1, le=1000), spans: bool = Param(
                          False, description="re-encode the top documents for the words the dimension comes from")
                      ) -> dict:
        return await run("encoding" if spans else "pool", engine().inspect, term, top, spans)

    # --- writing --------------------------------------------------------------------------------
    @app.post("/documents", dependencies=[Depends(writer_key)],
              summary="add or upsert documents; acknowledged once durably committed (unless commit=false)")
    async def add_documents(req: AddRequest) -> dict:
        e = engine()
        docs = [Document(d.id, d.text, d.title, d.fields) for d in req.documents]
        if req.documents[0].vector is not None:
            vectors = sp.vstack([e.vector(d.vector) for d in req.documents], format="csr")
        else:
            vectors = await run("encoding", e.encoder.encode_document, [d.text for d in docs])
        return await run("writing", partial(e.add, docs, vectors, upsert=req.upsert, commit=req.commit))

    @app.post("/documents/delete", dependencies=[Depends(writer_key)], summary="delete documents by id")
    async def delete_documents(req: DeleteRequest) -> dict:
        return await run("writing", partial(engine().delete, req.ids, commit=req.commit))

    @app.delete("/documents/{doc_id:path}", dependencies=[Depends(writer_key)], summary="delete one document")
    async def delete_document(doc_id: str, commit: bool = True) -> dict:
        result = await run("writing", partial(engine().delete, [doc_id], commit=commit))
        if result["not_found"]:
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return result

    @app.post("/commit", dependencies=[Depends(writer_key)], summary="make every acknowledged write durable")
    async def commit() -> dict:
        return {"generation": await run("writing", engine().commit)}

    # --- the search page ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: the settings come from ``SPARSEIR_SERVE_CONFIG``."""
    return create_app(ServeConfig.from_env())


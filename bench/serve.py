"""`sparseir serve` under load: QPS, p50/p99 latency and failures at 1, 8 and 32 concurrent clients.

    flock /work/bench.lock python -m bench.serve               # writes bench/results/serve.{md,json}
    python -m bench.serve --seconds 5 --datasets scifact        # a quick run

For each dataset (SciFact, and ``../shared/data/realtext`` from the cached splade-tiny vectors when
``--realtext-vectors`` holds some) it

1. measures in-process ``Searcher.batch_search`` QPS on the dataset's queries (encoding included),
   the figure a served QPS is compared with;
2. starts ``sparseir serve`` on a free 127.0.0.1 port and times process start -> first answered query;
3. runs closed-loop async httpx clients (each sends one query, waits for the answer, sends the next)
   for ``--seconds`` seconds or ``--max-requests`` requests, whichever comes first, at 1, 8 and 32
   clients, with micro-batched query encoding on (the default, 2 ms) and off (``--max-encode-batch 1``);
4. repeats the runs while a writer adds 100 documents a second (10 per request, each request
   acknowledged after its commit), on a copy of the index, when the server can write (live index).

Clients and server share this machine's 2 cores: the load generator's CPU time is taken from the server.
Every request goes to 127.0.0.1; every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from sparseir.corpus import load_queries
from sparseir.serve.process import ServerProcess

from .synth import SCIFACT, SHARED, SPLADE_TINY, scifact_vectors

RESULTS = Path(__file__).resolve().parent / "results"
REALTEXT = SHARED / "data" / "realtext"
REALTEXT_VECTORS = Path("/work/cache/realtext-splade-tiny")
CLIENTS = (1, 8, 32)
K = 10


# --- indexes ---------------------------------------------------------------------------------------
def scifact_index(out: Path) -> tuple[Path, dict]:
    """SciFact with splade-tiny (docs at 256 tokens, queries at 64), all 5,183 documents."""
    from sparseir.encoders import MLMSparseEncoder
    from sparseir.index import write_index

    data = scifact_vectors()
    encoder = MLMSparseEncoder(str(SPLADE_TINY), max_length=256, query_max_length=64)
    writer_docs = data.docs[:2000]  # the writer re-adds these under new ids
    write_index(out, data.doc_ids, data.docs, data.terms, encoder=encoder, overwrite=True)
    queries = {q: t for q, t in load_queries(SCIFACT).items() if q in data.qrels}  # the 300 test queries
    return out, {"name": "scifact", "n_docs": len(data.doc_ids), "queries": queries, "writer_vectors": writer_docs,
                 "terms": data.terms}


def realtext_index(out: Path, vectors: Path, limit: int | None) -> tuple[Path, dict]:
    """The realtext documents encoded so far in the vector cache (all 366,372 once it is COMPLETE)."""
    from bench.vectors import load_vectors
    from sparseir.encoders import load_encoder
    from sparseir.index import write_index

    ids, x, terms = load_vectors(vectors, limit)
    encoder = load_encoder(json.loads((vectors / "encoder.json").read_text(encoding="utf-8"))["config"])
    n_writer = min(2000, len(ids) // 10)  # held out of the index; the writer adds them
    write_index(out, ids[n_writer:], x[n_writer:], terms, encoder=encoder, overwrite=True)
    queries = dict(load_queries(REALTEXT / "queries.jsonl"))
    return out, {"name": "realtext", "n_docs": len(ids) - n_writer, "complete": (vectors / "COMPLETE").exists(),
                 "queries": queries, "writer_vectors": x[:n_writer], "terms": terms}


# --- measurements ----------------------------------------------------------------------------------
def in_process_qps(index: Path, queries: list[str]) -> dict:
    """``batch_search`` over all queries (encoding included), best of 2 passes after a warm-up."""
    from sparseir.search import Searcher

    searcher = Searcher(index)
    searcher.batch_search(queries[:64], k=K)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        searcher.batch_search(queries, k=K)
        times.append(time.perf_counter() - start)
    return {"queries": len(queries), "seconds": min(times), "qps": len(queries) / min(times)}


def start_server(index: Path, *args: str) -> tuple[ServerProcess, dict]:
    """Start a server; seconds from process start to healthy and to the first answered query."""
    server = ServerProcess(index, "--log-level", "error", *args).start(timeout=600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if httpx.post(f"{server.url}/search", json={"query": "first query", "k": K}, timeout=60).status_code == 200:
            break
    first = time.perf_counter() - server.started_at
    return server, {"ready_seconds": round(server.ready_seconds, 2), "first_query_seconds": round(first, 2)}


async def _post(http: httpx.AsyncClient, path: str, body: dict) -> tuple[bool, float]:
    """Whether one POST answered 200, and its seconds (a transport error is a failure)."""
    start = time.perf_counter()
    try:
        ok = (await http.post(path, json=body)).status_code == 200
    except httpx.HTTPError:
        ok = False
    return ok, time.perf_counter() - start


async def _writer(url: str, docs: list[dict], stop: asyncio.Event, out: dict) -> None:
    """100 documents a second: 10 per request every 100 ms, each acknowledged after its commit."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        sent, failures, latencies, n = 0, 0, [], 0
        next_at = time.perf_counter()
        while not stop.is_set() and n * 10 < len(docs):
            batch = docs[n * 10:(n + 1) * 10]
            n += 1
            ok, seconds = await _post(http, "/documents", {"documents": batch, "upsert": True})
            latencies.append(seconds)
            sent += len(batch) if ok else 0
            failures += not ok
            next_at += 0.1
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        out.update(docs_added=sent, write_failures=failures,
                   write_p50_ms=round(float(np.percentile(latencies, 50)) * 1000, 2) if latencies else None,
                   write_p99_ms=round(float(np.percentile(latencies, 99)) * 1000, 2) if latencies else None)


async def load(url: str, queries: list[str], clients: int, seconds: float, max_requests: int,
               writer_docs: list[dict] | None = None) -> dict:
    """Closed-loop clients for ``seconds`` (or ``max_requests`` requests in all); QPS and latency."""
    latencies: list[float] = []
    failures = 0
    count = 0
    deadline = time.perf_counter() + seconds
    stop = asyncio.Event()
    writes: dict = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal failures, count
        j = i * 97
        while time.perf_counter() < deadline and count < max_requests:
            count += 1
            q = queries[j % len(queries)]
            j += 1
            ok, seconds = await _post(http, "/search", {"query": q, "k": K})
            latencies.append(seconds)
            failures += not ok

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        writer = asyncio.create_task(_writer(url, writer_docs, stop, writes)) if writer_docs else None
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - start
        stop.set()
        if writer is not None:
            await writer
    lat = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "failures": failures, "seconds": round(elapsed, 2),
            "qps": round(len(latencies) / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), **writes}


def _writer_docs(info: dict) -> list[dict]:
    x, terms = info["writer_vectors"].tocsr(), info["terms"]
    return [{"id": f"bench-writer-{i}", "text": "", "vector": {terms[c]: float(w) for c, w in
             zip(x.indices[x.indptr[i]:x.indptr[i + 1]], x.data[x.indptr[i]:x.indptr[i + 1]])}}
            for i in range(x.shape[0])]


def bench_dataset(index: Path, info: dict, args: argparse.Namespace) -> dict:
    queries = list(info["queries"].values())[:args.max_queries]
    print(f"[{info['name']}] {info['n_docs']} documents, {len(queries)} queries", flush=True)
    out: dict = {"dataset": info["name"], "n_docs": info["n_docs"], "n_queries": len(queries),
                 **({"vectors_complete": info["complete"]} if "complete" in info else {})}
    out["in_process"] = in_process_qps(index, queries)
    print(f"  in-process batch_search: {out['in_process']['qps']:.1f} QPS", flush=True)
    runs = out["runs"] = []
    for label, extra in (("batching on (2 ms)", ()), ("batching off", ("--max-encode-batch", "1"))):
        server, startup = start_server(index, "--read-only", *extra)
        out.setdefault("startup", startup)
        try:
            for clients in CLIENTS:
                r = asyncio.run(load(server.url, queries, clients, args.seconds, args.max_requests))
                r.update(mode=label, writer=False,
                         encode_batching=httpx.get(f"{server.url}/stats", timeout=60).json()["encode_batching"])
                runs.append(r)
                print(f"  {label:<20} {clients:>2} clients: {r['qps']:8.1f} QPS  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  failures {r['failures']}", flush=True)
        finally:
            server.stop()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        copy = Path(tmp) / "index"
        shutil.copytree(index, copy)
        server, _ = start_server(copy)
        try:
            if not httpx.get(f"{server.url}/health", timeout=60).json()["read_only"]:
                docs = _writer_docs(info)
                for clients in CLIENTS:
                    r = asyncio.run(load(server.url, queries, clients, args.seconds, args.max_requests, docs))
                    r.update(mode="batching on (2 ms)", writer=True)
                    runs.append(r)
                    print(f"  with writer {clients:>2} clients: {r['qps']:8.1f} QPS  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms  failures {r['failures']}  added {r.get('docs_added')}",
                          flush=True)
            else:
                out["writer_note"] = "not run: this sparseir serves indexes read-only (no live index)"
        finally:
            server.stop()
    on = {r["clients"]: r for r in runs if r["mode"].startswith("batching on") and not r["writer"]}
    best = max(r["qps"] for r in on.values())
    out["targets"] = {
        "served_qps_best": best, "served_over_in_process": round(best / out["in_process"]["qps"], 3),
        "served_qps_target_met": best >= 0.7 * out["in_process"]["qps"],
        "p99_at_8_over_p50_at_1": round(on[8]["p99_ms"] / on[1]["p50_ms"], 2),
        "latency_target_met": on[8]["p99_ms"] <= 3 * on[1]["p50_ms"],
        "failures": sum(r["failures"] for r in runs),
    }
    return out


def report(results: list[dict], meta: dict) -> str:
    lines = ["# `sparseir serve` under load", "",
             f"Machine: {meta['machine']}, {meta['cpus']} cores (shared with other jobs while it ran), no GPU. "
             "Loopback only; closed-loop async httpx clients in the benchmark process, on the same 2 cores as "
             f"the server; k={K}; one query per request; splade-tiny query encoding on the server. "
             "`python -m bench.serve` regenerates this file (`--datasets` reruns some and keeps the others).", ""]
    for d in results:
        t = d["targets"]
        lines += [f"## {d['dataset']}: {d['n_docs']:,} documents, {d['n_queries']:,} queries", "",
                  f"Run {d['run']['date']} at commit `{d['run']['commit']}`, {d['run']['seconds_per_run']} s per load "
                  "run.", "",
                  f"Queries: the first {d['n_queries']:,} of the dataset's query file"
                  f"{' (SciFact: the test queries)' if d['dataset'] == 'scifact' else ''}, cycled by the clients.",
                  ""]
        if "vectors_complete" in d and not d["vectors_complete"]:
            lines += [f"The realtext vector cache was not complete when this ran: {d['n_docs']:,} of 366,372 "
                      "documents were indexed (those encoded so far).", ""]
        lines += [f"- In-process `batch_search` (encoding included): **{d['in_process']['qps']:.1f} QPS**.",
                  f"- Process start to healthy: {d['startup']['ready_seconds']} s; to the first answered query: "
                  f"**{d['startup']['first_query_seconds']} s**.", "",
                  "| mode | writer | clients | QPS | p50 ms | p99 ms | failures | mean encode batch | docs added |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in d["runs"]:
            mean = r.get("encode_batching", {}).get("mean_batch", "")
            lines.append(f"| {r['mode']} | {'100 docs/s' if r['writer'] else '-'} | {r['clients']} | {r['qps']} | "
                         f"{r['p50_ms']} | {r['p99_ms']} | {r['failures']} | {mean} | {r.get('docs_added', '')} |")
        if d.get("writer_note"):
            lines += ["", f"Runs with a writer: {d['writer_note']}."]
        lines += ["", "Targets:",
                  f"- served QPS >= 70% of in-process: best served {t['served_qps_best']} QPS = "
                  f"{100 * t['served_over_in_process']:.0f}% -> **{'met' if t['served_qps_target_met'] else 'missed'}**",
                  f"- p99 at 8 clients <= 3x p50 at 1 client: ratio {t['p99_at_8_over_p50_at_1']} -> "
                  f"**{'met' if t['latency_target_met'] else 'missed'}**",
                  f"- failed requests: {t['failures']}", ""]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    return out.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="scifact,realtext", help="comma-separated: scifact, realtext")
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each load run")
    p.add_argument("--max-requests", type=int, default=50_000, help="most requests in one run")
    p.add_argument("--max-queries", type=int, default=1000, help="the first N queries of each dataset's query file")
    p.add_argument("--realtext-vectors", type=Path, default=REALTEXT_VECTORS)
    p.add_argument("--realtext-limit", type=int, help="most realtext documents (default: all cached)")
    p.add_argument("--work", type=Path, default=None, help="folder for indexes (default: a temporary one)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if not 0 < args.seconds <= 600 or not 0 < args.max_requests <= 10_000_000:
        p.error("--seconds must be in (0, 600] and --max-requests in (0, 10^7]")
    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name in args.datasets.split(","):
            if name == "scifact":
                index, info = scifact_index(Path(tmp) / "scifact")
            elif name == "realtext":
                if not list(args.realtext_vectors.glob("part-*.npz")):
                    print(f"[realtext] skipped: no cached vectors in {args.realtext_vectors}")
                    continue
                index, info = realtext_index(Path(tmp) / "realtext", args.realtext_vectors, args.realtext_limit)
            else:
                p.error(f"unknown dataset {name!r}")
            results.append(bench_dataset(index, info, args))
            shutil.rmtree(index)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "seconds": args.seconds}
    for r in results:
        r["run"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit(),
                    "seconds_per_run": args.seconds}
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "serve.json"
    if previous.exists():  # a run of some datasets keeps the others' results
        done = {r["dataset"] for r in results}
        results = [r for r in json.loads(previous.read_text())["results"] if r["dataset"] not in done] + results
    (args.out / "serve.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "serve.md").write_text(report(results, meta))
    print(f"wrote {args.out / 'serve.md'}")


if __name__ == "__main__":
    main()

"""Build a sharded index: encode (on a Ray cluster or in this process), write segments, commit per shard.

Encoding workers route each batch of documents to its shards and write one standalone segment
per target shard (:func:`~sparseir.index.write_segment`) into a staging folder, under a temporary
name renamed into place: a worker killed mid-batch leaves no half-written segment, and Ray's
retry of the batch writes the same segment again. When every batch is done, each shard adopts
its segments in sequence order in one commit (:meth:`IndexWriter.add_segments`), and the whole
sharded index is published by one rename: a failed build publishes nothing.

All shards share one uint8 scale: ``scale``, or the largest weight of the first chunk / 255
(the driver encodes that chunk itself to fix it, as one index's first segment fixes its scale).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .._fs import atomic_dir
from ..errors import UsageError
from ..index import is_index, write_segment
from ..index.format import QUANTIZATIONS, UINT8_LEVELS
from ..index.segment_writer import check_vectors
from .shardmap import SEQ_FIELD, check_shards, is_sharded, route, shard_dir
from .writer import ShardedWriter

BUILD_INFO = "build.json"


def _rows(corpus: Iterable[Any], store: bool) -> Iterator[dict[str, Any]]:
    """Documents as rows: global sequence number, id, text to encode, stored record (JSON)."""
    for seq, doc in enumerate(corpus):
        record = {"id": doc.id, "title": getattr(doc, "title", "") or "", "text": doc.text,
                  **(getattr(doc, "fields", None) or {}), SEQ_FIELD: seq} if store else {}
        yield {"seq": seq, "id": doc.id, "text": doc.text, "record": json.dumps(record, ensure_ascii=False)}


class EncodeToShards:
    """A Ray Data batch function (one per actor, holding the encoder) that writes a segment per target shard."""

    def __init__(self, encoder: Any, staging: str, n_shards: int, quantize: str, scale: float | None,
                 batch_size: int | None = None) -> None:
        """``encoder``: an encoder, or its ``config()`` (an actor loads its own copy from it)."""
        from ..encoders import load_encoder

        self.encoder = load_encoder(encoder) if isinstance(encoder, dict) else encoder
        self.staging, self.n_shards, self.batch_size = Path(staging), n_shards, batch_size
        self.quantize, self.scale = quantize, scale

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(np.asarray(batch["seq"], dtype=np.int64), kind="stable")
        x = self.encoder.encode_document([str(batch["text"][i]) for i in order], batch_size=self.batch_size,
                                         show_progress_bar=False)
        if self.scale is None:  # the first chunk, on the driver
            self.scale = float(x.max()) / UINT8_LEVELS if self.quantize == "uint8" and x.nnz else 1.0
        records = [json.loads(str(batch["record"][i])) for i in order]
        return stage_batch(self.staging, self.n_shards, np.asarray(batch["seq"], dtype=np.int64)[order],
                           [str(batch["id"][i]) for i in order], x, self.encoder,
                           records if records and records[0] else None, quantize=self.quantize, scale=self.scale)


def stage_batch(staging: Path, n_shards: int, seqs: np.ndarray, ids: Sequence[str], vectors: sp.spmatrix,
                encoder: Any, records: Sequence[dict[str, Any]] | None, *, quantize: str,
                scale: float) -> dict[str, np.ndarray]:
    """Route a batch (in sequence order) and write one segment per target shard, atomically.

    A segment is named after its first sequence number, so a retried batch writes the same names;
    if one is already there (a retry after a finished attempt) the new copy is dropped.
    """
    x = check_vectors(vectors, len(ids), len(encoder.terms))
    shards = route(list(ids), n_shards)
    out: dict[str, list] = {"shard": [], "segment": [], "n_docs": []}
    for s in np.unique(shards):
        rows = np.flatnonzero(shards == s)
        folder = staging / shard_dir(int(s))
        folder.mkdir(parents=True, exist_ok=True)
        name = f"seg-{int(seqs[rows[0]]):012d}"
        tmp = folder / f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        write_segment(tmp, [ids[r] for r in rows], x[rows], encoder.terms, quantize=quantize, scale=scale,
                      encoder=encoder, records=[records[r] for r in rows] if records else None)
        try:
            os.rename(tmp, folder / name)
        except OSError:
            if not (folder / name / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp)
        out["shard"].append(int(s))
        out["segment"].append(name)
        out["n_docs"].append(len(rows))
    return {k: np.asarray(v) for k, v in out.items()}


def build_sharded_index(corpus: Iterable[Any], encoder: Any, out: str | Path, shards: int, *, ray: bool = True,
                        ray_address: str | None = None, workers: int | None = None, quantize: str = "uint8",
                        scale: float | None = None, store: bool = True, chunk_size: int = 1024,
                        batch_size: int | None = None, overwrite: bool = False,
                        show_progress_bar: bool = True) -> Path:
    """Encode ``corpus`` (Documents) with ``encoder`` into a new sharded index of ``shards`` live indexes.

    With ``ray``, Ray Data encodes batches of ``chunk_size`` documents on an actor pool of
    ``workers`` actors (default: one per GPU when the cluster has GPUs, else one per CPU),
    connecting to ``ray_address`` or starting Ray locally. Without it, the same batches are
    encoded in this process. ``overwrite`` replaces an existing index at ``out`` (published by one
    rename when the build succeeds).
    """
    check_shards(shards)
    for name, value in (("workers", workers), ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if scale is not None and not scale > 0:
        raise UsageError(f"--scale must be > 0, got {scale!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    if out.is_dir() and not is_sharded(out) and not is_index(out) and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not a sparseir index; refusing to replace it")
    try:
        total = len(corpus)  # type: ignore[arg-type]
    except TypeError:
        total = None
    rows = _rows(corpus, store)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        local = EncodeToShards(encoder, str(staging), shards, quantize, scale, batch_size)
        first = _encode_local(islice(rows, chunk_size), local, chunk_size) if scale is None else iter(())

        def rest() -> Iterator[dict[str, np.ndarray]]:  # starts once the first chunk has fixed the scale
            if ray:
                args = (encoder.config(), str(staging), shards, quantize, local.scale, batch_size)
                yield from _encode_ray(rows, args, workers, ray_address, chunk_size)
            else:
                yield from _encode_local(rows, local, chunk_size)

        results = chain(first, rest())
        segments: dict[int, dict[str, int]] = {s: {} for s in range(shards)}
        n_docs = 0
        with tqdm(total=total, unit="doc", desc=f"encode ({'ray' if ray else 'local'})",
                  disable=not show_progress_bar) as bar:
            for res in results:
                for s, name, n in zip(res["shard"], res["segment"], res["n_docs"]):
                    segments[int(s)][str(name)] = int(n)
                    n_docs += int(n)
                    bar.update(int(n))
                bar.set_postfix(docs_per_s=f"{n_docs / (time.perf_counter() - start):.1f}")
        if n_docs == 0:
            raise UsageError("the corpus has no documents")
        encode_seconds = time.perf_counter() - start
        with atomic_dir(out) as tmp:
            with ShardedWriter(tmp, encoder, shards=shards, quantize=quantize, store=store, scale=local.scale,
                               create=True) as writer:
                for s in tqdm(range(shards), desc="commit shards", disable=not show_progress_bar):
                    names = sorted(segments[s])  # sequence order
                    writer.add_segments(s, [staging / shard_dir(s) / n for n in names],
                                        sum(segments[s][n] for n in names))
                    writer.writers[s].optimize(1)
            (tmp / BUILD_INFO).write_text(json.dumps({
                "n_docs": n_docs, "n_shards": shards, "ray": ray, "scale": local.scale,
                "encode_seconds": round(encode_seconds, 3),
                "docs_per_second": round(n_docs / encode_seconds, 2) if encode_seconds else None,
                "build_seconds": round(time.perf_counter() - start, 3)}, indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_sharded_index(out: str | Path, ids: Sequence[str], vectors: sp.spmatrix, terms: Sequence[str],
                        shards: int, *, quantize: str = "uint8", scale: float | None = None, encoder: Any = None,
                        store: bool = True, overwrite: bool = False) -> Path:
    """Write already-encoded vectors (in insertion order) as a new sharded index, in this process.

    The default ``scale`` is the largest weight / 255, as :func:`~sparseir.index.write_index` picks.
    """
    x = check_vectors(vectors, len(ids), len(terms))
    if scale is None and quantize == "uint8":
        scale = float(x.max()) / UINT8_LEVELS if x.nnz else 1.0
    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    with atomic_dir(out) as tmp:
        with ShardedWriter(tmp, encoder, shards=shards, terms=terms, quantize=quantize, store=store, scale=scale,
                           create=True) as writer:
            writer.add(list(ids), x)
            writer.optimize(1)
    return out


def _encode_local(rows: Iterable[dict[str, Any]], fn: EncodeToShards,
                  chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    rows = iter(rows)
    while chunk := list(islice(rows, chunk_size)):
        yield fn({k: np.asarray([r[k] for r in chunk], dtype=object) for k in chunk[0]})


def _encode_ray(rows: Iterable[dict[str, Any]], args: tuple, workers: int | None, ray_address: str | None,
                chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    items = list(rows)
    if not items:
        return
    import ray
    import ray.data

    from .cluster import connect

    connect(ray_address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if workers is None:
        workers = max(1, gpus or int(resources.get("CPU", 1)))
    ds = ray.data.from_items(items)
    ds = ds.map_batches(EncodeToShards, fn_constructor_args=args, batch_size=chunk_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        **({"num_gpus": 1} if gpus else {"num_cpus": 1}))  # Ray Data restarts dead actors, retries
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")

"""Build a sharded index: encode (on a Ray cluster or in this process), route, stage, commit.

Encoding workers turn a batch of documents into one staged *part* per target shard, written to
a temporary name and renamed into place, so a worker killed mid-batch leaves no partial part
(Ray retries the batch; the part's name depends only on its first sequence number, so the retry
replaces it). After all batches, each shard is committed from its parts in sequence order, the
shard map is written, and the whole folder is published by one rename: a failed build publishes
nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .._fs import atomic_dir
from ..errors import UsageError
from ..index import IndexWriter
from ..indexing import encoder_info
from .shard import SEQ_DIR, seq_path
from .shardmap import ShardMap, check_shards, route, shard_dir

STAGING = "staging"
BUILD_INFO = "build.json"


def _rows(corpus: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Documents as Ray Data rows: global sequence number, id, text to encode, stored record."""
    for seq, doc in enumerate(corpus):
        title = getattr(doc, "title", "")
        fields = getattr(doc, "fields", None) or {}
        record = {"id": doc.id, "title": title, "text": doc.text, **fields}
        yield {"seq": seq, "id": doc.id, "text": doc.text, "record": json.dumps(record, ensure_ascii=False)}


def _part_name(first_seq: int) -> str:
    return f"part-{first_seq:012d}.npz"


class EncodeToShards:
    """A Ray Data batch function (one per actor, holding the encoder) that stages parts per shard."""

    def __init__(self, encoder: Any, staging: str, n_shards: int, batch_size: int | None = None) -> None:
        """``encoder``: an encoder, or its ``config()`` (an actor loads its own copy from it)."""
        from ..encoders import load_encoder

        self.encoder = load_encoder(encoder) if isinstance(encoder, dict) else encoder
        self.staging, self.n_shards, self.batch_size = Path(staging), n_shards, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(np.asarray(batch["seq"]), kind="stable")
        texts = [str(batch["text"][i]) for i in order]
        x = self.encoder.encode_document(texts, batch_size=self.batch_size, show_progress_bar=False)
        return stage_batch(self.staging, self.n_shards, np.asarray(batch["seq"], dtype=np.int64)[order],
                           [str(batch["id"][i]) for i in order], x, [str(batch["record"][i]) for i in order])


def stage_batch(staging: Path, n_shards: int, seqs: np.ndarray, ids: list[str], vectors: sp.spmatrix,
                records: list[str] | None = None) -> dict[str, np.ndarray]:
    """Route a batch (in sequence order) to its shards and write one part per shard, atomically."""
    x = sp.csr_matrix(vectors, dtype=np.float32)
    shards = route(ids, n_shards)
    out: dict[str, list] = {"shard": [], "part": [], "n_docs": [], "max_weight": []}
    for s in np.unique(shards):
        rows = np.flatnonzero(shards == s)
        part = x[rows]
        name = _part_name(int(seqs[rows[0]]))
        folder = staging / shard_dir(int(s))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, seqs=seqs[rows], ids=np.asarray([ids[r] for r in rows], dtype=str),
                     records=np.asarray([records[r] for r in rows] if records else [], dtype=str),
                     indptr=part.indptr, indices=part.indices, data=part.data)
        os.replace(tmp, folder / name)
        out["shard"].append(int(s))
        out["part"].append(name)
        out["n_docs"].append(len(rows))
        out["max_weight"].append(float(part.data.max()) if part.nnz else 0.0)
    return {k: np.asarray(v) for k, v in out.items()}


def _commit_shard(staging: Path, out: Path, shard: int, parts: list[str], terms: list[str], *, quantize: str,
                  max_weight: float, encoder: dict[str, Any]) -> int:
    """Write shard ``shard`` from its staged parts in sequence order; returns its document count."""
    folder = staging / shard_dir(shard)
    loaded = []
    for name in sorted(parts):
        with np.load(folder / name) as z:
            loaded.append({k: z[k] for k in z.files})
    seqs = np.concatenate([p["seqs"] for p in loaded]) if loaded else np.zeros(0, np.int64)
    if np.any(np.diff(seqs) <= 0):
        raise RuntimeError(f"shard {shard}: staged parts overlap in sequence numbers")
    with IndexWriter(out / shard_dir(shard), terms, quantize=quantize, encoder=encoder) as w:
        for p in loaded:
            w.add(p["ids"].tolist(), sp.csr_matrix((p["data"], p["indices"], p["indptr"]),
                                                   shape=(len(p["ids"]), len(terms))))
        w.max_weight = max_weight  # one dequantisation scale for all shards, as one unsharded index would have
        w.close({"shard": shard})
    np.save(seq_path(out, shard), seqs)
    return len(seqs)


def build_sharded_index(corpus: Iterable[Any], encoder, out: str | Path, shards: int, *, ray: bool = True,
                        ray_address: str | None = None, workers: int | None = None, quantize: str = "uint8",
                        chunk_size: int = 1024, batch_size: int | None = None, overwrite: bool = False,
                        show_progress_bar: bool = True) -> Path:
    """Encode ``corpus`` (Documents) with ``encoder`` into a sharded index at ``out``.

    With ``ray``, Ray Data encodes batches of ``chunk_size`` documents on an actor pool of
    ``workers`` actors (default: one per CPU, or one per GPU when the cluster has GPUs), connecting
    to ``ray_address`` or starting a local Ray. Without it, the same batches are encoded in this
    process.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {chunk_size}")

    def encode(staging: Path) -> Iterator[dict[str, np.ndarray]]:
        if ray:
            return _encode_ray(corpus, (encoder.config(), str(staging), shards, batch_size), workers, ray_address,
                               chunk_size)
        return _encode_local(corpus, EncodeToShards(encoder, str(staging), shards, batch_size), chunk_size)

    return _build(out, shards, encoder.terms, encode, quantize=quantize, overwrite=overwrite, ray=ray,
                  encoder=encoder_info(encoder), show_progress_bar=show_progress_bar)


def write_sharded_index(out: str | Path, ids: Sequence[str], vectors: sp.spmatrix, terms: Sequence[str],
                        shards: int, *, quantize: str = "uint8", encoder: dict[str, Any] | None = None,
                        chunk_size: int = 8192, overwrite: bool = False, show_progress_bar: bool = False) -> Path:
    """Write already-encoded vectors (in insertion order) as a sharded index, in this process."""
    x = sp.csr_matrix(vectors, dtype=np.float32)
    if x.shape[0] != len(ids):
        raise UsageError(f"{len(ids)} ids for {x.shape[0]} vectors")

    def stage(staging: Path) -> Iterator[dict[str, np.ndarray]]:
        for lo in range(0, len(ids), chunk_size):
            hi = min(lo + chunk_size, len(ids))
            yield stage_batch(staging, shards, np.arange(lo, hi, dtype=np.int64), list(ids[lo:hi]), x[lo:hi])

    return _build(out, shards, list(terms), stage, quantize=quantize, overwrite=overwrite, ray=False,
                  encoder=encoder, show_progress_bar=show_progress_bar)


def _build(out: str | Path, shards: int, terms: list[str], stage, *, quantize: str, overwrite: bool, ray: bool,
           encoder: dict[str, Any] | None, show_progress_bar: bool) -> Path:
    """Stage parts with ``stage(staging)``, commit every shard, write the map, publish ``out`` atomically."""
    check_shards(shards)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        staging = tmp / STAGING
        staging.mkdir()
        parts: dict[int, list[str]] = {s: [] for s in range(shards)}
        n_docs, max_weight = 0, 0.0
        with tqdm(unit="doc", desc=f"encode ({'ray' if ray else 'local'})", disable=not show_progress_bar) as bar:
            for res in stage(staging):
                for s, name, n, w in zip(res["shard"], res["part"], res["n_docs"], res["max_weight"]):
                    parts[int(s)].append(str(name))
                    n_docs += int(n)
                    max_weight = max(max_weight, float(w))
                    bar.update(int(n))
                bar.set_postfix(docs_per_s=f"{n_docs / (time.perf_counter() - start):.1f}")
        encode_seconds = time.perf_counter() - start
        (tmp / SEQ_DIR).mkdir()
        for s in tqdm(range(shards), desc="commit shards", disable=not show_progress_bar):
            _commit_shard(staging, tmp, s, parts[s], terms, quantize=quantize, max_weight=max_weight,
                          encoder=encoder)
        shutil.rmtree(staging)
        ShardMap(shards, next_seq=n_docs).save(tmp)
        (tmp / BUILD_INFO).write_text(json.dumps({
            "n_docs": n_docs, "n_shards": shards, "ray": ray, "encoder": encoder,
            "encode_seconds": round(encode_seconds, 3),
            "docs_per_second": round(n_docs / encode_seconds, 2) if encode_seconds else None,
            "build_seconds": round(time.perf_counter() - start, 3)}, indent=2), encoding="utf-8")
    return out


def _encode_local(corpus: Iterable[Any], fn: EncodeToShards, chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    rows = _rows(corpus)
    while chunk := list(islice(rows, chunk_size)):
        yield fn({k: np.asarray([r[k] for r in chunk], dtype=object) for k in chunk[0]})


def _encode_ray(corpus: Iterable[Any], args: tuple, workers: int | None, ray_address: str | None,
                chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    import ray
    import ray.data

    from .cluster import connect

    connect(ray_address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if workers is None:
        workers = max(1, gpus or int(resources.get("CPU", 1)))
    ds = ray.data.from_items(list(_rows(corpus)))
    ds = ds.map_batches(EncodeToShards, fn_constructor_args=args, batch_size=chunk_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        **({"num_gpus": 1} if gpus else {"num_cpus": 1}))  # Ray Data restarts dead actors, retries
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")

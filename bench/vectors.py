"""Encode a large corpus once and cache its vectors outside the repository, resumably.

    python -m bench.vectors ../shared/data/realtext/corpus.jsonl.gz \
        --encoder ../shared/models/splade-tiny --out /work/cache/realtext-splade-tiny

The cache is a folder of parts of ``PART`` documents: ``part-NNNNN.npz`` (a scipy CSR float32
``[n, dim]`` matrix, ``scipy.sparse.save_npz``) and ``part-NNNNN.ids`` (one document id a line, same
order), plus ``terms.txt`` and ``encoder.json``. Each part is written to a temporary name and renamed,
so a killed run resumes at the first missing part. ``COMPLETE`` appears when every document is done.
Benchmarks read it with :func:`load_vectors`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import scipy.sparse as sp

PART = 8192


def load_vectors(folder: str | Path, limit: int | None = None) -> tuple[list[str], sp.csr_matrix, list[str]]:
    """The cached ``(ids, vectors, terms)``, at most ``limit`` documents, in corpus order."""
    folder = Path(folder)
    terms = (folder / "terms.txt").read_text(encoding="utf-8").split("\n")
    ids: list[str] = []
    parts = []
    for part in sorted(folder.glob("part-*.npz")):
        if limit is not None and len(ids) >= limit:
            break
        parts.append(sp.load_npz(part).tocsr())
        ids += part.with_suffix(".ids").read_text(encoding="utf-8").split("\n")
    x = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(terms)), dtype=np.float32)
    n = len(ids) if limit is None else min(limit, len(ids))
    return ids[:n], x[:n], terms


def _documents(path: Path) -> Iterator[tuple[str, str]]:
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                yield str(obj["_id"]), " ".join(s for s in (obj.get("title"), obj.get("text")) if s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", type=Path, help="JSONL or JSONL.gz with _id, title, text")
    p.add_argument("--encoder", required=True, help="encoder spec, as for `sparseir index`")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-length", type=int, default=256)
    args = p.parse_args()

    from tqdm.auto import tqdm

    from sparseir.encoders import load_encoder
    from sparseir.indexing import encoder_info

    encoder = load_encoder(args.encoder, max_length=args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "terms.txt").write_text("\n".join(encoder.terms), encoding="utf-8")
    (args.out / "encoder.json").write_text(json.dumps(encoder_info(encoder), indent=2), encoding="utf-8")
    docs = _documents(args.corpus)
    start, done = time.perf_counter(), 0
    with tqdm(unit="doc", desc="encode") as bar:
        for n in range(1 << 30):
            chunk = list(islice(docs, PART))
            if not chunk:
                break
            part = args.out / f"part-{n:05d}.npz"
            bar.update(len(chunk))
            if part.exists():
                continue
            ids, texts = zip(*chunk)
            x = encoder.encode_document(list(texts), show_progress_bar=False)
            sp.save_npz(args.out / f".tmp-{n:05d}.npz", x, compressed=False)
            tmp_ids = args.out / f".tmp-{n:05d}.ids"
            tmp_ids.write_text("\n".join(ids), encoding="utf-8")
            os.replace(tmp_ids, part.with_suffix(".ids"))
            os.replace(args.out / f".tmp-{n:05d}.npz", part)
            done += len(chunk)
            bar.set_postfix(docs_per_s=f"{done / (time.perf_counter() - start):.1f}")
    (args.out / "COMPLETE").write_text(f"{bar.n} documents\n", encoding="utf-8")


if __name__ == "__main__":
    main()

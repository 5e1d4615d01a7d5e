"""Helpers for benchmark tests: a small, self-consistent slice of the real SciFact data."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SCIFACT


def make_scifact_slice(dest: Path, n_queries: int = 20, n_docs: int = 200) -> Path:
    """A BEIR folder with the first ``n_queries`` judged test queries, their relevant documents,
    and other SciFact documents up to ``n_docs`` in total."""
    qrels_lines = (SCIFACT / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = qrels_lines[0], [line.split("\t") for line in qrels_lines[1:] if line.strip()]
    qids: list[str] = []
    for qid, _, grade in rows:
        if int(grade) > 0 and qid not in qids:
            qids.append(qid)
    qids = qids[:n_queries]
    keep_rows = [r for r in rows if r[0] in qids]
    relevant = {r[1] for r in keep_rows}
    docs, fillers = [], 0
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if json.loads(line)["_id"] in relevant:
                docs.append(line)
            elif fillers < n_docs - len(relevant):
                docs.append(line)
                fillers += 1
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    (dest / "corpus.jsonl").write_text("".join(docs), encoding="utf-8")
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        queries = [line for line in f if json.loads(line)["_id"] in qids]
    (dest / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    (dest / "qrels" / "test.tsv").write_text("\n".join([header, *("\t".join(r) for r in keep_rows)]) + "\n",
                                             encoding="utf-8")
    return dest

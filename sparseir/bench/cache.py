"""A content-keyed cache of benchmark artefacts (encoded vectors, indexes, runs).

Keys hash the dataset fingerprint, the model fingerprint and every setting that
changes the artefact, so a re-run reuses what it can and a change rebuilds only
what it affects. Entries are folders written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparseir._fs import atomic_dir

__all__ = ["Cache", "digest", "file_digest", "dataset_fingerprint", "model_fingerprint", "write_json", "read_json"]


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def dataset_fingerprint(spec: str, split: str = "test") -> str:
    """Content hash of a BEIR folder's corpus, queries and qrels; the id itself for ``irds:`` specs."""
    if spec.startswith("irds:"):
        return digest("irds", spec, split)
    path = Path(spec)
    files = [path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"] if path.is_dir() else [path]
    return digest([(f.name, file_digest(f)) for f in files if f.is_file()])


def model_fingerprint(name_or_path: str) -> str:
    """Content hash of a local model folder (file names, sizes and bytes); the id for a hub model."""
    path = Path(name_or_path)
    if not path.exists():
        return digest("hub", name_or_path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return digest([(str(f.relative_to(path) if path.is_dir() else f.name), f.stat().st_size, file_digest(f))
                   for f in files])


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class Cache:
    """Folders under ``root/<kind>/<key>``; an entry exists once its ``DONE`` marker is written."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / "DONE").exists()

    @contextlib.contextmanager
    def create(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a temporary folder that becomes the entry (with its marker) if the block succeeds."""
        with atomic_dir(self.path(kind, key)) as tmp:
            yield tmp
            (tmp / "DONE").touch()

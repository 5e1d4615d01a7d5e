"""Commit points, the write lock and the removal of unreferenced files.

An index directory holds immutable segments under ``segments/`` and commit files
``commit-<generation>.json``. A commit lists the live segments in order with their deletion
bitmaps; it is published atomically (temp file, fsync, rename, fsync of the folder), so a crash
at any instant leaves the last published commit intact. Readers open the highest generation and
never take the lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import FileLock, atomic_write, fsync_dir
from .format import (ARRAYS, FORMAT_NAME, FORMAT_VERSION, MANIFEST, IndexFormatError, checksum,
                     read_json, require, sha256_file)

SEGMENTS = "segments"
LOCK = "write.lock"
_COMMIT = re.compile(r"^commit-(\d{8,})\.json$")
_DELETES = re.compile(r"^del-(s\d{8,})-(\d{8,})\.npy$")
#: commits (and the files they reference) kept besides the newest one, so that a reader that
#: listed the directory just before a commit can still open what it saw.
KEEP_COMMITS = 2


def commit_name(generation: int) -> str:
    return f"commit-{generation:08d}.json"


def generations(path: Path) -> list[int]:
    """Published commit generations in ``path``, ascending."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for n in names if (m := _COMMIT.match(n)))


def read_commit(path: Path, generation: int) -> dict[str, Any]:
    """Commit ``generation`` of index ``path``, validated (its checksum covers every field)."""
    file = path / commit_name(generation)
    commit = read_json(file, "commit")
    require(commit, file, generation=int, segments=list, settings=dict)
    require(commit["settings"], file, n_dims=int, scale=(int, float, type(None)), quantization=str)
    for seg in commit["segments"]:
        if not isinstance(seg, dict):
            raise IndexFormatError(f"{file}: corrupt segment entry {seg!r}")
        require(seg, file, name=str, n_docs=int, n_deleted=int, manifest_sha256=str)
    return commit


def write_commit(path: Path, generation: int, settings: dict[str, Any], segments: list[dict[str, Any]]) -> None:
    """Publish commit ``generation`` atomically."""
    commit = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "generation": generation, "time": time.time(),
              "settings": settings, "segments": segments}
    commit["checksum"] = checksum(commit)
    atomic_write(path / commit_name(generation), json.dumps(commit, indent=2).encode("utf-8"))


def write_deletes(path: Path, segment: str, generation: int, dead: np.ndarray) -> dict[str, Any]:
    """Write a segment's deletion bitmap (``np.packbits`` of a bool mask) for a commit."""
    name = f"del-{segment}-{generation:08d}.npy"
    file = path / SEGMENTS / name
    with open(file, "wb") as f:
        np.save(f, np.packbits(dead.astype(bool)))
        f.flush()
        os.fsync(f.fileno())
    return {"file": name, "sha256": sha256_file(file)}


def read_deletes(path: Path, entry: dict[str, Any] | None, n_docs: int, verify: bool) -> np.ndarray | None:
    """A segment's deletion mask (uint8 ``[n_docs]``, 1 = deleted), or ``None`` without deletions."""
    if not entry:
        return None
    file = path / SEGMENTS / str(entry.get("file"))
    if verify and sha256_file(file) != entry.get("sha256"):
        raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
    try:
        packed = np.load(file)
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IndexFormatError(f"{file}: unreadable deletion bitmap ({e})") from None
    if packed.dtype != np.uint8 or packed.shape != (-(-n_docs // 8),):
        raise IndexFormatError(f"{file}: deletion bitmap disagrees with the segment's {n_docs} documents")
    return np.unpackbits(packed, count=n_docs)


class WriteLock(FileLock):
    """``write.lock`` of index ``path``: held while a writer is open (see :class:`~sparseir._fs.FileLock`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path / LOCK,
                         lambda holder: f"{path} is locked by another writer ({holder}); only one writer at a time")


def referenced(path: Path, gens: list[int]) -> set[str]:
    """Names (relative to ``segments/``) of segment folders and deletion files used by ``gens``."""
    keep: set[str] = set()
    for g in gens:
        try:
            commit = json.loads((path / commit_name(g)).read_text(encoding="utf-8"))
            keep.add(commit["settings"]["terms"]["file"])
            for seg in commit["segments"]:
                keep.add(seg["name"])
                if seg.get("deletes"):
                    keep.add(seg["deletes"]["file"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable commit references nothing worth keeping
    return keep


def clean(path: Path, protect: set[str] = frozenset()) -> int:
    """Remove what no recent commit references; returns the number of entries removed.

    Keeps the newest ``KEEP_COMMITS + 1`` commits and their files (a grace for readers that are
    opening an older commit: see FORMAT.md, "Readers"), plus ``protect``. Only the writer that
    holds the lock calls this.
    """
    gens = generations(path)
    keep_gens = gens[-(KEEP_COMMITS + 1):]
    keep = referenced(path, keep_gens) | set(protect)
    removed = 0
    for g in gens[:-(KEEP_COMMITS + 1)] if len(gens) > KEEP_COMMITS + 1 else []:
        _remove(path / commit_name(g))
        removed += 1
    for name in os.listdir(path):
        if name.startswith(".") and ".tmp-" in name:  # an interrupted atomic_write
            _remove(path / name)
            removed += 1
    seg_dir = path / SEGMENTS
    if seg_dir.is_dir():
        for name in os.listdir(seg_dir):
            if name not in keep:
                _remove(seg_dir / name)
                removed += 1
    if keep_gens and (path / MANIFEST).is_file():  # a version-1 index replaced by --overwrite
        for name in [MANIFEST, *ARRAYS.values()]:
            _remove(path / name)
    if removed:
        fsync_dir(path)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass

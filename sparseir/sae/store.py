"""On-disk activation store: a memmapped ``activations.npy`` plus ``meta.json``, streamed in chunks."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sparseir._fs import publish_dir
from sparseir.errors import SparseirError

META = "meta.json"
ACTS = "activations.npy"
TEXTS = "texts.jsonl"
TOKEN_IDS = "token_ids.npy"
ROW_TEXT = "row_text.npy"
MEAN_POOLED = "mean_pooled.npy"


class StoreError(SparseirError, ValueError):
    """A folder that is not a readable activation store; the message names the file at fault."""


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


class ActivationStore:
    """Read-only view of collected activations.

    ``meta.json`` records the source (``kind``: "embedding" or "hidden", model path, layer,
    pooling, ...). Every row maps to a text line of ``texts.jsonl`` through ``row_text.npy``;
    hidden-state stores also hold each row's token id in ``token_ids.npy``. Rows whose index
    is a multiple of ``val_every`` form the validation split.
    """

    def __init__(self, path: str | Path, val_every: int = 50) -> None:
        self.path = Path(path)
        if not (self.path / META).is_file() or not (self.path / ACTS).is_file():
            raise StoreError(
                f"{self.path} is not an activation store (needs {META} and {ACTS}); run `sparseir sae collect`"
            )
        try:
            self.meta: dict = json.loads((self.path / META).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{self.path / META}: not valid JSON ({e})") from None
        if not isinstance(self.meta, dict):
            raise StoreError(f"{self.path / META}: expected a JSON object")
        try:
            self.acts = np.load(self.path / ACTS, mmap_mode="r")
        except (ValueError, OSError) as e:  # not an .npy file, or a truncated one
            raise StoreError(f"{self.path / ACTS}: not a readable .npy array ({e})") from None
        if self.acts.ndim != 2 or self.acts.shape[0] == 0:
            raise StoreError(f"{self.path / ACTS} must be a non-empty 2-D array, got shape {self.acts.shape}")
        if val_every < 2:
            raise ValueError(f"val_every must be >= 2, got {val_every}")
        self.val_every = val_every

    @property
    def n_rows(self) -> int:
        """Number of activation rows."""
        return int(self.acts.shape[0])

    @property
    def dim(self) -> int:
        """Activation width."""
        return int(self.acts.shape[1])

    @property
    def kind(self) -> str:
        """Source kind, "embedding" or "hidden"."""
        return str(self.meta["kind"])

    def row_text(self) -> np.ndarray:
        """Index of the ``texts.jsonl`` line each row comes from."""
        return np.load(self.path / ROW_TEXT, mmap_mode="r")

    def token_ids(self) -> np.ndarray:
        """Token id of each row (hidden-state stores only)."""
        if not (self.path / TOKEN_IDS).is_file():
            raise ValueError(f"{self.path} holds no token ids (source kind {self.kind!r})")
        return np.load(self.path / TOKEN_IDS, mmap_mode="r")

    def mean_pooled(self) -> np.ndarray:
        """Per-text unit-norm mean-pooled states (hidden-state stores only)."""
        if not (self.path / MEAN_POOLED).is_file():
            raise ValueError(f"{self.path} holds no {MEAN_POOLED}")
        return np.load(self.path / MEAN_POOLED)

    def texts(self) -> list[dict]:
        """The ``texts.jsonl`` records (``id``, ``text``)."""
        with open(self.path / TEXTS, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def _chunk_bounds(self, chunk_rows: int) -> list[tuple[int, int]]:
        return [(s, min(s + chunk_rows, self.n_rows)) for s in range(0, self.n_rows, chunk_rows)]

    def _train_rows(self, start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop)
        return rows[rows % self.val_every != 0]

    def batches_per_epoch(self, batch_size: int, chunk_rows: int) -> int:
        """Training batches in one epoch (batches never span chunks)."""
        return sum(-(-len(self._train_rows(s, e)) // batch_size) for s, e in self._chunk_bounds(chunk_rows))

    def train_batches(
        self, batch_size: int, chunk_rows: int, seed: int, start_step: int = 0
    ) -> Iterator[np.ndarray]:
        """Endless shuffled training batches (float32), deterministic in ``seed``.

        Chunks are visited in a random order per epoch and shuffled within; ``start_step``
        skips that many batches without reading them, so a resumed run continues exactly.
        """
        bounds = self._chunk_bounds(chunk_rows)
        per_chunk = [-(-len(self._train_rows(s, e)) // batch_size) for s, e in bounds]
        per_epoch = sum(per_chunk)
        epoch, skip = divmod(start_step, per_epoch)
        while True:
            rng = np.random.default_rng([seed, epoch])
            for c in rng.permutation(len(bounds)):
                if skip >= per_chunk[c]:
                    skip -= per_chunk[c]
                    continue
                s, e = bounds[c]
                rows = self._train_rows(s, e)
                data = np.asarray(self.acts[s:e], dtype=np.float32)[rows - s]
                data = data[np.random.default_rng([seed, epoch, int(c)]).permutation(len(rows))]
                for b in range(skip, per_chunk[c]):
                    yield data[b * batch_size : (b + 1) * batch_size]
                skip = 0
            epoch += 1

    def chunks(self, chunk_rows: int, split: str = "all") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """In-order ``(row_indices, float32 rows)`` of the "all", "train" or "val" split."""
        if split not in ("all", "train", "val"):
            raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
        for s, e in self._chunk_bounds(chunk_rows):
            rows = np.arange(s, e)
            if split == "train":
                rows = rows[rows % self.val_every != 0]
            elif split == "val":
                rows = rows[rows % self.val_every == 0]
            if len(rows):
                yield rows, np.asarray(self.acts[s:e], dtype=np.float32)[rows - s]

    def norm_stats(self, chunk_rows: int = 65536, center: bool = True) -> tuple[np.ndarray, float]:
        """Training-split mean and the root mean squared norm of centred rows; with ``center=False``
        a zero mean and the root mean squared norm of the raw rows."""
        total = np.zeros(self.dim, dtype=np.float64)
        sq = 0.0
        n = 0
        for _, x in self.chunks(chunk_rows, "train"):
            total += x.sum(0, dtype=np.float64)
            sq += float(np.square(x, dtype=np.float64).sum())
            n += len(x)
        if n == 0:
            raise ValueError(f"{self.path}: no training rows")
        mean = total / n if center else np.zeros(self.dim)
        var = sq / n - float(mean @ mean)
        return mean.astype(np.float32), float(np.sqrt(max(var, 1e-12)))


class StoreWriter:
    """Write an activation store into a temporary directory, published on success.

    Fill ``acts``, ``row_text`` (and ``token_ids`` when ``with_tokens``), ``texts`` and
    ``extra`` (name -> array, saved as ``name``) inside the ``with`` block; on a clean exit
    the directory replaces ``path``.
    """

    def __init__(
        self, path: str | Path, n_rows: int, dim: int, meta: dict, *, dtype: str = "float16", with_tokens: bool = False
    ) -> None:
        if n_rows <= 0 or dim <= 0:
            raise ValueError(f"store shape must be positive, got ({n_rows}, {dim})")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.tmp."))
        self.meta = {**meta, "n_rows": int(n_rows), "dim": int(dim), "dtype": dtype}
        self.acts = np.lib.format.open_memmap(self.tmp / ACTS, mode="w+", dtype=dtype, shape=(n_rows, dim))
        self.row_text = np.zeros(n_rows, dtype=np.int32)
        self.token_ids = np.zeros(n_rows, dtype=np.int32) if with_tokens else None
        self.texts: list[dict] = []
        self.extra: dict[str, np.ndarray] = {}

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            del self.acts
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.acts.flush()
        del self.acts
        np.save(self.tmp / ROW_TEXT, self.row_text)
        if self.token_ids is not None:
            np.save(self.tmp / TOKEN_IDS, self.token_ids)
        for name, arr in self.extra.items():
            np.save(self.tmp / name, arr)
        with open(self.tmp / TEXTS, "w", encoding="utf-8") as f:
            for rec in self.texts:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        (self.tmp / META).write_text(json.dumps(self.meta, indent=1))
        publish_dir(self.tmp, self.path)

"""Benchmark configuration: datasets, systems and settings, from a TOML file or CLI flags.

TOML form::

    out = "bench/results/scifact"
    datasets = ["../shared/data/beir/scifact"]

    [[system]]
    name = "bm25"
    kind = "bm25"            # bm25 | dense | sparseir | lucene-impact | fusion
    k1 = 0.9
    b = 0.4

    [[system]]
    name = "splade"
    kind = "sparseir"
    encoder = "mlm:../shared/models/splade-tiny"

    [[system]]
    name = "splade-lucene"
    kind = "lucene-impact"
    of = "splade"            # reuses that system's vectors; cross-checks sparseir
    scale = 100

    [[system]]
    name = "rrf(splade,bm25)"
    kind = "fusion"
    method = "rrf"           # rrf | convex
    of = ["splade", "bm25"]

Relative paths in a TOML file are resolved against the current directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseir.encoders import split_spec
from sparseir.errors import SparseirError

KINDS = ("bm25", "dense", "sparseir", "lucene-impact", "fusion")

# Allowed parameters per kind, with defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "bm25": {"k1": 0.9, "b": 0.4},
    "dense": {"model": None, "batch_size": 64, "max_seq_length": None},
    "sparseir": {"encoder": None, "quantize": "uint8", "batch_size": 32, "max_active_dims": None},
    "lucene-impact": {"of": None, "scale": 100.0},
    "fusion": {"method": "rrf", "of": None, "k": 60, "weights": None, "norm": "minmax"},
}
REQUIRED = {"dense": ("model",), "sparseir": ("encoder",), "lucene-impact": ("of",), "fusion": ("of",)}


class ConfigError(SparseirError, ValueError):
    """A bad benchmark configuration."""


@dataclass(frozen=True)
class SystemSpec:
    """One system to benchmark: a unique ``name``, a ``kind`` and its parameters."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, name: str, kind: str, **params: Any) -> "SystemSpec":
        if kind not in KINDS:
            raise ConfigError(f"system {name!r}: unknown kind {kind!r}; expected one of {KINDS}")
        unknown = set(params) - set(DEFAULTS[kind])
        if unknown:
            raise ConfigError(f"system {name!r} ({kind}): unknown parameter(s) {sorted(unknown)}")
        merged = {**DEFAULTS[kind], **params}
        missing = [p for p in REQUIRED.get(kind, ()) if merged.get(p) in (None, "", [])]
        if missing:
            raise ConfigError(f"system {name!r} ({kind}): missing {missing}")
        if kind == "fusion":
            if merged["method"] not in ("rrf", "convex"):
                raise ConfigError(f"system {name!r}: fusion method must be 'rrf' or 'convex'")
            if isinstance(merged["of"], str) or not 2 <= len(merged["of"]) <= 3:
                raise ConfigError(f"system {name!r}: fusion 'of' must list two or three systems")
            if merged["weights"] is not None and len(merged["weights"]) != len(merged["of"]):
                raise ConfigError(f"system {name!r}: {len(merged['weights'])} weights for {len(merged['of'])} systems")
            unused = "norm" if merged["method"] == "rrf" else "k"
            if unused in params:
                raise ConfigError(f"system {name!r}: {unused!r} does not apply to {merged['method']} fusion")
            del merged[unused]
            merged["of"] = list(merged["of"])
        return cls(name, kind, merged)

    @property
    def depends_on(self) -> tuple[str, ...]:
        of = self.params.get("of")
        return () if of is None else (of,) if isinstance(of, str) else tuple(of)


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run needs."""

    datasets: tuple[str, ...]
    systems: tuple[SystemSpec, ...]
    out: Path
    cache_dir: Path = Path("data/cache")
    split: str = "test"
    k: int = 100
    latency_queries: int = 300
    threads: int = 0  # 0: all cores
    isolate: bool = True  # run each system in its own process (honest peak RSS)
    show_progress: bool = True

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("no datasets given")
        if not self.systems:
            raise ConfigError("no systems given")
        if self.k < 10:
            raise ConfigError("k must be at least 10 (nDCG@10 needs ten results)")
        names = [s.name for s in self.systems]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"duplicate system names: {sorted(dupes)}")
        known = set(names)
        for s in self.systems:
            for dep in s.depends_on:
                if dep not in known:
                    raise ConfigError(f"system {s.name!r} depends on unknown system {dep!r}")
                dep_kind = next(x.kind for x in self.systems if x.name == dep)
                if s.kind == "lucene-impact" and dep_kind != "sparseir":
                    raise ConfigError(f"system {s.name!r}: 'of' must name a sparseir system, not {dep_kind}")
                if s.kind == "fusion" and dep_kind == "fusion":
                    raise ConfigError(f"system {s.name!r}: cannot fuse the fusion system {dep!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"], d["cache_dir"] = str(self.out), str(self.cache_dir)
        return d


def _fields() -> set[str]:
    return {f.name for f in dataclasses.fields(BenchConfig)} - {"systems"}


def load_config(path: str | Path, **overrides: Any) -> BenchConfig:
    """Read a TOML config; ``overrides`` (non-None values) replace top-level keys."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    systems_raw = raw.pop("system", [])
    unknown = set(raw) - _fields()
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    systems = []
    for i, s in enumerate(systems_raw):
        s = dict(s)
        if "name" not in s or "kind" not in s:
            raise ConfigError(f"{path}: [[system]] #{i + 1} needs 'name' and 'kind'")
        systems.append(SystemSpec.make(s.pop("name"), s.pop("kind"), **s))
    return from_mapping(raw, systems)


def from_mapping(raw: dict[str, Any], systems: Sequence[SystemSpec]) -> BenchConfig:
    """Build a :class:`BenchConfig` from plain values (paths as strings)."""
    if "out" not in raw:
        raise ConfigError("no output folder ('out') given")
    datasets = raw.get("datasets", ())
    if isinstance(datasets, str):
        datasets = (datasets,)
    kwargs = {k: v for k, v in raw.items() if k in _fields() and k not in ("datasets", "out", "cache_dir")}
    return BenchConfig(datasets=tuple(str(d) for d in datasets), systems=tuple(systems), out=Path(raw["out"]),
                       cache_dir=Path(raw.get("cache_dir", "data/cache")), **kwargs)


def systems_from_flags(names: Sequence[str], *, dense_model: str | None = None, splade_model: str | None = None,
                       encoders: Sequence[str] = (), k1: float = 0.9, b: float = 0.4) -> list[SystemSpec]:
    """Turn ``--systems`` tokens into specs.

    Tokens: ``bm25``; ``dense`` (``--dense-model``); ``splade`` (``--splade-model``,
    an MLM encoder) or any name given with ``--encoder NAME=SPEC``; ``NAME-lucene``
    (Lucene impact search on a sparse system's vectors); ``rrf:A+B[+C]`` and
    ``convex:A+B[+C]`` (fusion of listed systems).
    """
    sparse = {}
    if splade_model:
        sparse["splade"] = splade_model if split_spec(splade_model)[0] else f"mlm:{splade_model}"
    for item in encoders:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise ConfigError(f"--encoder expects NAME=SPEC, got {item!r}")
        sparse[name] = spec
    specs: list[SystemSpec] = []
    for token in names:
        token = token.strip()
        if not token:
            continue
        method, sep, rest = token.partition(":")
        if sep and method in ("rrf", "convex"):
            specs.append(SystemSpec.make(token, "fusion", method=method, of=rest.split("+")))
        elif token == "bm25":
            specs.append(SystemSpec.make("bm25", "bm25", k1=k1, b=b))
        elif token == "dense":
            if not dense_model:
                raise ConfigError("system 'dense' needs --dense-model")
            specs.append(SystemSpec.make("dense", "dense", model=dense_model))
        elif token in sparse:
            specs.append(SystemSpec.make(token, "sparseir", encoder=sparse[token]))
        elif token.endswith("-lucene") and token[: -len("-lucene")] in sparse:
            specs.append(SystemSpec.make(token, "lucene-impact", of=token[: -len("-lucene")]))
        else:
            hint = " (give its model with --splade-model or --encoder NAME=SPEC)" if token in ("splade",) else ""
            raise ConfigError(f"unknown system {token!r}{hint}")
    return specs

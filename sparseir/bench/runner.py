"""Run a benchmark: every dataset x system, results cached, then the reports.

Each base system runs in a fresh process by default (``isolate``), so its peak
RSS is its own and the JVM / torch state of one system cannot colour another's
timings. A system's finished result is cached under a key of the dataset, the
system's settings (model files included) and the run settings; a re-run reuses
it, so adding one system to a config only runs that system.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path
from typing import Any

from sparseir.bench.cache import Cache, dataset_fingerprint, digest, model_fingerprint, read_json, write_json
from sparseir.bench.config import BenchConfig, SystemSpec
from sparseir.bench.systems import Dataset, Settings, run_base_system, run_fusion
from sparseir.encoders import split_spec

RESULT_VERSION = 3  # bump when the result record or its measurements change meaning


def dataset_name(spec: str) -> str:
    return spec.removeprefix("irds:").rstrip("/").replace("/", "-") if spec.startswith("irds:") \
        else Path(spec).resolve().name


def _model_paths(spec: SystemSpec) -> list[str]:
    """The model a system loads, as a path or hub id (for the result key)."""
    if spec.kind == "dense":
        return [spec.params["model"]]
    if spec.kind == "sparseir":
        enc = spec.params["encoder"]
        return [split_spec(enc)[1]]
    return []


def result_key(spec: SystemSpec, ds: Dataset, s: Settings, base: SystemSpec | None) -> str:
    """Everything that changes a system's result."""
    models = [model_fingerprint(m) for m in _model_paths(base or spec)]
    return digest(RESULT_VERSION, ds.fingerprint, spec.kind, spec.params, base.params if base else None, models,
                  s.k, s.latency_queries, s.threads)


def _run_isolated(spec: SystemSpec, ds: Dataset, s: Settings, base: SystemSpec | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_base_system, spec, ds, s, base, True).result()


def run_system(spec: SystemSpec, ds: Dataset, s: Settings, base: SystemSpec | None, isolate: bool) -> dict[str, Any]:
    """One base system's result, from the cache or freshly run (and then cached)."""
    cache = Cache(s.cache_dir)
    key = result_key(spec, ds, s, base)
    if cache.has("results", key):
        result = read_json(cache.path("results", key) / "result.json")
        result["cached"] = True
        return result
    result = _run_isolated(spec, ds, s, base) if isolate else run_base_system(spec, ds, s, base, False)
    with cache.create("results", key) as tmp:
        write_json(tmp / "result.json", result)
    result["cached"] = False
    return result


def load_dataset(spec: str, split: str) -> Dataset:
    return Dataset(spec=spec, name=dataset_name(spec), fingerprint=dataset_fingerprint(spec, split), split=split)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run ``cfg`` and write its reports to ``cfg.out``; returns the report dict."""
    from sparseir.bench.machine import describe
    from sparseir.bench.report import write_reports

    s = Settings(cache_dir=str(cfg.cache_dir), k=cfg.k, latency_queries=cfg.latency_queries,
                 threads=cfg.threads or os.cpu_count() or 1, show_progress=cfg.show_progress)
    by_name = {sp.name: sp for sp in cfg.systems}
    datasets: dict[str, Any] = {}
    for spec in cfg.datasets:
        ds = load_dataset(spec, cfg.split)
        if ds.name in datasets:
            raise ValueError(f"two datasets are both named {ds.name!r}")
        results: dict[str, dict[str, Any]] = {}
        for sys_spec in sorted(cfg.systems, key=lambda x: x.kind == "fusion"):  # fusion last, else config order
            if sys_spec.kind == "fusion":
                results[sys_spec.name] = run_fusion(sys_spec, ds, [results[n] for n in sys_spec.depends_on])
            else:
                base = by_name[sys_spec.params["of"]] if sys_spec.kind == "lucene-impact" else None
                results[sys_spec.name] = run_system(sys_spec, ds, s, base, cfg.isolate)
        queries = ds.queries()
        datasets[ds.name] = {"spec": spec, "fingerprint": ds.fingerprint, "split": ds.split,
                             "n_docs": len(ds.corpus()), "n_queries": len(queries), "systems": results}
    report = {"machine": describe(), "config": cfg.to_dict(), "settings": s.__dict__, "datasets": datasets}
    write_reports(report, cfg.out)
    return report

"""Write a benchmark's ``report.md``, ``report.json`` and ``quality_vs_latency.png``.

All three are written to temporary files and moved into place. ``report.json``
holds everything but the runs themselves and per-query timings, so two runs can
be diffed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

BULKY = ("run", "latency_ms", "search_latency_ms")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def slim(report: dict[str, Any]) -> dict[str, Any]:
    """The report without runs and per-query timings."""
    out = copy.deepcopy(report)
    for ds in out["datasets"].values():
        for result in ds["systems"].values():
            for key in BULKY:
                result.pop(key, None)
    return out


def summary(report: dict[str, Any], metric: str = "nDCG@10") -> dict[str, dict[str, float]]:
    """``{system: {dataset: value, ..., "mean": value}}``; the mean covers the datasets a system ran on."""
    table: dict[str, dict[str, float]] = {}
    for ds_name, ds in report["datasets"].items():
        for name, result in ds["systems"].items():
            table.setdefault(name, {})[ds_name] = result["metrics"][metric]
    for row in table.values():
        row["mean"] = sum(row.values()) / len(row)
    return table


def _f(value: float | None, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _machine_md(m: dict[str, Any]) -> list[str]:
    v = m["versions"]
    return [
        f"- **Machine**: {m['cpu']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB RAM, GPU: {m['gpu'] or 'none'}; "
        f"{m['os']}, Python {m['python']}"
        + (f"; load average {'/'.join(map(str, m['load_average']))} (1/5/15 min) when the report was written"
           if m.get("load_average") else ""),
        "- **Libraries**: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- **Date**: {m['date']}" + (f", commit `{m['git_commit']}`" if m.get("git_commit") else ""),
    ]


def _system_rows(ds: dict[str, Any]) -> list[str]:
    rows = ["| System | nDCG@10 | R@100 | MRR@10 | Index build (s) | Index (MiB) | Encode docs/s (device) "
            "| p50 (ms) | p99 (ms) | Search-only p50 / p99 (ms) | Batch QPS | Peak RSS (MiB) |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, r in ds["systems"].items():
        b, m, lat = r["build"], r["metrics"], r["latency"]
        dps = b.get("docs_per_second")
        enc = f"{dps:.1f} ({b['device']})" if dps else "–"
        rows.append(f"| {name} | {m['nDCG@10']:.4f} | {m['R@100']:.4f} | {m['RR@10']:.4f} "
                    f"| {_f(b.get('index_seconds'), '.1f')} | {b['index_bytes'] / 2**20:.1f} | {enc} "
                    f"| {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} "
                    f"| {r['search_latency']['p50_ms']:.2f} / {r['search_latency']['p99_ms']:.2f} "
                    f"| {r['batch']['qps']:.1f} "
                    f"| {r['peak_rss_bytes'] / 2**20:.0f} |")
    return rows


def _crosscheck_md(ds: dict[str, Any]) -> list[str]:
    lines = []
    for name, r in ds["systems"].items():
        c = r.get("crosscheck")
        if c:
            lines.append(f"- **{name}** vs sparseir on the same integer impacts (weights x {c['scale']:g}, rounded), "
                         f"top {c['depth']}: identical ranking on {c['identical_ranking']}/{c['queries']} queries, "
                         f"identical up to the order of tied documents on {c['identical_up_to_ties']}/{c['queries']}, "
                         f"identical scores at every rank on {c['identical_scores']}/{c['queries']} "
                         "(engines break ties by internal doc id, which Lucene's segment merging reorders); "
                         "nDCG@10 sparseir "
                         f"{c['ndcg10_sparseir']:.4f} vs Lucene {c['ndcg10_lucene']:.4f} "
                         f"(difference {c['ndcg10_delta']:.4f}).")
    return lines


def _systems_md(ds: dict[str, Any]) -> list[str]:
    out = []
    for name, r in ds["systems"].items():
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None)
        load = r.get("load_average")
        load_md = f"; machine load average {load[0]:.1f} (1 min) after its measurements" if load else ""
        out.append(f"- `{name}`: {r['kind']} ({params}){load_md}")
    return out


def to_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# sparseir benchmark", "", *_machine_md(report["machine"]),
             f"- **Settings**: retrieval depth k={s['k']}; latency = end-to-end per query (query encoding included), "
             "and search-only with the query already encoded (BM25: the same, analysis is part of Lucene's search), "
             f"one thread, over the first {s['latency_queries']} judged queries; batch QPS = all judged queries at once "
             f"with {s['threads']} threads. Index build time excludes document encoding (shown as docs/s; a Lucene "
             "impact row reuses its sparseir system's vectors). Metrics by ir-measures, a document whose id equals the "
             "query id removed "
             "(Pyserini's `--remove-query`). Fusion rows add their components' costs (run one after another) to the "
             "fusion itself; their peak RSS is the largest component's.", ""]
    loads = [r["load_average"][0] for ds in report["datasets"].values() for r in ds["systems"].values()
             if r.get("load_average")]
    cores = report["machine"].get("cpu_cores") or 0
    if loads and max(loads) > cores:
        lines += [f"> **Contended timings**: the machine's 1-minute load average reached {max(loads):.1f} on "
                  f"{cores} cores during the measurements (other jobs were running), so latency and QPS are "
                  "pessimistic and noisy; quality metrics are unaffected.", ""]
    for ds_name, ds in report["datasets"].items():
        lines += [f"## {ds_name}", "", f"{ds['n_docs']} documents, {ds['n_queries']} judged queries "
                  f"(`{ds['spec']}`, split {ds['split']}).", "", *_system_rows(ds), ""]
        check = _crosscheck_md(ds)
        if check:
            lines += ["Cross-check:", "", *check, ""]
        lines += ["Systems:", "", *_systems_md(ds), ""]
    if len(report["datasets"]) > 1:
        table = summary(report)
        names = list(report["datasets"])
        lines += ["## Summary (nDCG@10)", "", "| System | " + " | ".join(names) + " | Mean |",
                  "|---|" + "---:|" * (len(names) + 1)]
        for system, row in table.items():
            cells = [_f(row.get(n), ".4f") for n in names]
            lines.append(f"| {system} | " + " | ".join(cells) + f" | {row['mean']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """nDCG@10 against p50 latency, one point per system (mean over datasets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    quality = summary(report)
    lat: dict[str, list[float]] = {}
    for ds in report["datasets"].values():
        for name, r in ds["systems"].items():
            lat.setdefault(name, []).append(r["latency"]["p50_ms"])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=150)
    for name, row in quality.items():
        x = sum(lat[name]) / len(lat[name])
        ax.scatter(x, row["mean"], s=40)
        ax.annotate(name, (x, row["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.2, y=0.08)
    ax.set_xlabel("p50 query latency, ms (one thread, encoding included; log scale)")
    ax.set_ylabel("nDCG@10" + (" (mean over datasets)" if len(report["datasets"]) > 1 else ""))
    ax.set_title(", ".join(report["datasets"]))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_reports(report: dict[str, Any], out: str | Path) -> None:
    """``report.md``, ``report.json`` and ``quality_vs_latency.png`` in ``out``."""
    out = Path(out)
    slimmed = slim(report)
    _atomic_write(out / "report.json", lambda p: p.write_text(json.dumps(slimmed, indent=1, sort_keys=False) + "\n",
                                                              encoding="utf-8"))
    _atomic_write(out / "report.md", lambda p: p.write_text(to_markdown(slimmed), encoding="utf-8"))
    _atomic_write(out / "quality_vs_latency.png", lambda p: plot(slimmed, p))

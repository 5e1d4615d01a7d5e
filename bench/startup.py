"""Start-up cost of the ``sparseir`` command line: wall time and peak memory of short commands.

    python bench/startup.py --tree ../before --label before    # a checkout of the commit before
    python bench/startup.py --tree . --label after

Each command runs ``--repeat`` times in a fresh interpreter (median wall time, largest peak RSS);
``search`` and ``info`` use a 50-document SciFact index built first with the same tree. Results
are appended to ``bench/results/startup.json``; ``bench/results/startup.md`` is written from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "bench" / "results"


def run(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``python -m sparseir.cli ARGS`` with ``tree`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparseir.cli", *args], env=env, cwd=tree, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, required=True, help="source tree whose sparseir is timed")
    ap.add_argument("--label", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tree = args.tree.resolve()
    load_average = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "c.jsonl"
        with open(SHARED / "data/beir/scifact/corpus.jsonl", encoding="utf-8") as f:
            corpus.write_text("".join(next(f) for _ in range(50)), encoding="utf-8")
        index = Path(tmp) / "ix"
        run(tree, ["index", str(corpus), "--encoder", f"mlm:{SHARED / 'models/splade-tiny'}", "--out", str(index)])
        commands = {
            "sparseir --help": ["--help"],
            "sparseir search --help": ["search", "--help"],
            "sparseir info INDEX": ["info", str(index)],
            "sparseir search INDEX 'vitamin D'": ["search", str(index), "vitamin D"],
        }
        rows = {}
        for name, cmd in commands.items():
            # RUSAGE_CHILDREN's peak is a running maximum, so each command is measured in its own helper process.
            code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import startup, json; "
                    f"print(json.dumps([startup.run(__import__('pathlib').Path({str(tree)!r}), {cmd!r}) "
                    f"for _ in range({args.repeat})]))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            runs = json.loads(out)
            rows[name] = {"seconds": round(statistics.median(w for w, _ in runs), 3),
                          "peak_rss_mib": round(max(m for _, m in runs), 1)}
            print(f"{args.label:<8} {name:<40} {rows[name]['seconds']:7.3f} s  {rows[name]['peak_rss_mib']:7.1f} MiB")
    path = RESULTS / "startup.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[args.label] = {"tree": str(tree), "commands": rows, "repeat": args.repeat, "load_average": load_average,
                        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    path.write_text(json.dumps(data, indent=2) + "\n")
    write_md(data)


def write_md(data: dict) -> None:
    labels = list(data)
    names = list(next(iter(data.values()))["commands"])
    lines = ["# Start-up of the command line", "",
             "Median wall time of `python -m sparseir.cli ...` over fresh interpreters and the largest peak RSS, "
             f"measured by `bench/startup.py` on a shared 2-core machine ({next(iter(data.values()))['machine']}; "
             "load average when each ran: " + ", ".join(f"{lb} {data[lb].get('load_average', 'n/a')}" for lb in labels)
             + "; `before` is the last commit before the start-up work, `after` this tree, run one after the other). "
             "`search` and `info` use a 50-document SciFact index (splade-tiny). Peak RSS shows what was imported "
             "(over 400 MiB means torch was loaded).", "",
             "| command | " + " | ".join(f"{lb} s | {lb} MiB" for lb in labels) + " |",
             "|---|" + "---:|---:|" * len(labels)]
    for n in names:
        cells = [f"{data[lb]['commands'][n]['seconds']:.2f} | {data[lb]['commands'][n]['peak_rss_mib']:.0f}"
                 for lb in labels]
        lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

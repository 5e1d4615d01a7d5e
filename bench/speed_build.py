"""Build one engine's index in a fresh process and record its seconds, peak RSS and bytes.

    python -m bench.speed_build ENGINE BUILD_CONFIG_JSON CORPUS_DIR OUT

``ENGINE`` is a ``bench.speed_engines`` engine name, or ``sparseir-index`` (sparseir's uint8 index,
written with ``write_index`` from ``CORPUS_DIR/docs-float.npz``, ``ids.txt`` and ``terms.txt``).
The index is built in ``OUT.tmp-PID`` and renamed to ``OUT`` with ``BUILT.json`` inside: build
seconds, the process's peak RSS (``getrusage``) after the build and before it (once the inputs'
modules were imported), and the index bytes. A fresh process keeps the peak RSS the build's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.speed_engines import dir_size, make


def built(engine: str, config: dict[str, Any], corpus_dir: Path, out: Path) -> dict[str, Any]:
    """``OUT/BUILT.json``, building the index first (in a child process) if it is not there."""
    info = out / "BUILT.json"
    if not info.is_file():
        cmd = [sys.executable, "-m", "bench.speed_build", engine, json.dumps(config), str(corpus_dir), str(out)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return json.loads(info.read_text(encoding="utf-8"))


def _sparseir_index(corpus_dir: Path, out: Path) -> None:
    from bench.speed_corpora import load_csr
    from sparseir.index import write_index

    docs, _ = load_csr(corpus_dir / "docs-float.npz")
    ids = (corpus_dir / "ids.txt").read_text(encoding="utf-8").split("\n")
    terms = (corpus_dir / "terms.txt").read_text(encoding="utf-8").split("\n")
    write_index(out, ids, docs, terms, quantize="uint8")


def main(argv: list[str] | None = None) -> None:
    name, config, corpus_dir, out = (argv or sys.argv[1:])[:4]
    corpus_dir, out, config = Path(corpus_dir), Path(out), json.loads(config)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from sparseir.timing import peak_rss_bytes

    engine = None if name == "sparseir-index" else make(name, config)
    before = peak_rss_bytes()
    start = time.perf_counter()
    if engine is None:
        _sparseir_index(corpus_dir, tmp / "index")
    else:
        engine.build(corpus_dir, tmp)
    seconds = time.perf_counter() - start
    info = {"engine": name, "build_config": config, "build_s": seconds, "peak_rss_bytes": peak_rss_bytes(),
            "rss_before_build_bytes": before, "bytes": dir_size(tmp), "pid": os.getpid()}
    (tmp / "BUILT.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()

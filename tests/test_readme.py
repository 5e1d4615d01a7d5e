"""Every fenced code block of README.md runs as written, on shared data (a SciFact slice stands in for
the full SciFact folder to keep CI fast; the model and every other path are the real ones)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
SCIFACT = "../shared/data/beir/scifact"


def _localize(text: str, scifact_slice: Path) -> str:
    """README paths resolved from the project root; the SciFact folder becomes the slice."""
    return text.replace(SCIFACT, str(scifact_slice)).replace("../shared/", f"{SHARED}/")


def _blocks(lang: str) -> list[str]:
    return [body for tag, body in BLOCKS if tag == lang]


def _run(line: str, cwd: Path) -> None:
    args = shlex.split(line)
    assert args[0].endswith("sparseir"), line
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "sparseir.cli", *args[1:]], cwd=cwd, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, f"{line}\n{r.stderr[-3000:]}"


def test_every_block_is_covered():
    assert [tag for tag, _ in BLOCKS] == ["bash", "bash", "python", "bash"]


def test_setup_commands(scifact_slice, tmp_path):
    setup, tests, *_ = _blocks("bash")
    steps = setup.strip().split(" && ")
    ci = (ROOT / ".ci" / "run").read_text()
    # the first two steps are what CI runs from nothing; the rest run here
    assert steps[0] == "python3 -m venv .venv" and "python3 -m venv .venv" in ci
    assert steps[1] == '.venv/bin/pip install torch==2.13.0 -e ".[all]"' and 'torch==2.13.0 -e ".[all]"' in ci
    assert tests.strip() == "HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q" and tests.strip() in ci
    for step in steps[2:]:
        _run(_localize(step, scifact_slice), tmp_path)


def test_api_block(scifact_slice, tmp_path, monkeypatch):
    (code,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(_localize(code, scifact_slice), "README.md", "exec"), {})


@pytest.mark.slow
def test_command_line_block(scifact_slice, tmp_path):
    block = _blocks("bash")[2]
    # the user's own file of new documents (one new, one that replaces a SciFact document)
    (tmp_path / "more.jsonl").write_text(
        '{"_id": "new-1", "title": "Bone health", "text": "Vitamin D and calcium in older adults."}\n'
        '{"_id": "7912", "title": "Replaced", "text": "An updated abstract."}\n', encoding="utf-8")
    for line in block.strip().splitlines():
        _run(_localize(line, scifact_slice), tmp_path)
    assert (tmp_path / "run.trec").read_text().split("\n", 1)[0].endswith(" splade-tiny")
    assert (tmp_path / "bench-out" / "report.md").is_file()

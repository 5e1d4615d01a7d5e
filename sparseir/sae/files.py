"""Names of the files in an SAE checkpoint folder, and reading its JSON extras (no torch here)."""

from __future__ import annotations

import json
from pathlib import Path

FORMAT = "sparseir-sae"
CONFIG = "sae_config.json"
WEIGHTS = "sae.safetensors"
TRAIN_STATE = "train_state.pt"
LABELS = "labels.json"
DIAGNOSTICS = "diagnostics.json"
FREQ_HIST = "freq_hist.png"


def read_json(path: str | Path, name: str) -> object | None:
    """An extra JSON file of the checkpoint, or None when absent."""
    f = Path(path) / name
    return json.loads(f.read_text()) if f.is_file() else None

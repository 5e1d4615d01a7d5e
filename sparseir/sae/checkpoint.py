"""SAE checkpoint directories: config.json, sae.safetensors, train_state.pt and extras, written atomically."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sparseir._fs import publish_dir
from sparseir.errors import UsageError
from sparseir.sae.files import CONFIG, DIAGNOSTICS, FORMAT, FREQ_HIST, LABELS, TRAIN_STATE, WEIGHTS, read_json
from sparseir.sae.model import SAEConfig, SparseAutoencoder

__all__ = ["CONFIG", "DIAGNOSTICS", "FORMAT", "FREQ_HIST", "LABELS", "TRAIN_STATE", "WEIGHTS", "load_sae",
           "read_config", "read_json", "save_sae"]


def save_sae(
    path: str | Path,
    model: SparseAutoencoder,
    info: dict,
    *,
    train_state: dict | None = None,
    extra_json: dict[str, object] | None = None,
    extra_bytes: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete checkpoint directory to ``path`` (temp dir, then rename).

    ``info`` holds the source description ("source") and training settings; extras are
    further files (labels.json, diagnostics.json, freq_hist.png) written alongside.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp."))
    config = {"format": FORMAT, "version": 1, "sae": model.cfg.to_dict(), **info}
    (tmp / CONFIG).write_text(json.dumps(config, indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
    if train_state is not None:
        torch.save(train_state, tmp / TRAIN_STATE)
    for name, obj in (extra_json or {}).items():
        (tmp / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    for name, data in (extra_bytes or {}).items():
        (tmp / name).write_bytes(data)
    publish_dir(tmp, path)
    return path


def read_config(path: str | Path) -> dict:
    """The checkpoint's config.json, checked for format."""
    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise UsageError(f"{path} is not an SAE checkpoint (no {CONFIG}); train one with `sparseir sae train`")
    config = json.loads(cfg_file.read_text())
    if config.get("format") != FORMAT:
        raise UsageError(f"{cfg_file} is not a {FORMAT} config (format={config.get('format')!r})")
    return config


def load_sae(path: str | Path, device: str | torch.device | None = None) -> tuple[SparseAutoencoder, dict]:
    """Load ``(model in eval mode, config dict)`` from a checkpoint directory."""
    config = read_config(path)
    model = SparseAutoencoder(SAEConfig.from_dict(config["sae"]))
    model.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
    model.eval()
    return model.to(device or "cpu"), config

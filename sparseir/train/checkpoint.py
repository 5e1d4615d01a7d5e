"""Resumable training state: a LoRA (or full) model, its optimizer and a loss history, saved atomically.

A checkpoint folder is written next to the final output as ``.NAME.checkpoint`` through
:func:`sparseir._fs.atomic_dir`, so a run killed at any instant leaves either the previous
checkpoint or the new one, and never a partial folder under the final name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from .._fs import atomic_dir
from . import TrainError

STATE = "state.json"


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint"


def save_checkpoint(out: str | Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> None:
    """Write the trainable tensors, the optimizer state and ``state`` (step, losses, config)."""
    with atomic_dir(checkpoint_path(out)) as tmp:
        torch.save({"trainable": trainable, "optimizer": optimizer.state_dict()}, tmp / "weights.pt")
        (tmp / STATE).write_text(json.dumps(state), encoding="utf-8")


def load_checkpoint(out: str | Path, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(tensors, state)`` of the checkpoint for ``out``, or ``None`` when there is none.

    A checkpoint made with other settings is refused rather than silently mixed in.
    """
    folder = checkpoint_path(out)
    if not (folder / STATE).is_file():
        return None
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainError(f"checkpoint {folder} is unreadable ({type(e).__name__}: {e}); delete it to start over") from e
    if state.get("config") != config:
        diff = sorted(k for k in set(config) | set(state.get("config") or {})
                      if config.get(k) != (state.get("config") or {}).get(k))
        raise TrainError(f"checkpoint {folder} was made with other settings ({', '.join(diff)}); "
                         "delete it or pass --restart to start over")
    try:
        tensors = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise TrainError(f"checkpoint {folder} is unreadable ({type(e).__name__}: {e}); delete it to start over") from e
    return tensors, state


def resume(out: str | Path, config: dict[str, Any], optimizer: torch.optim.Optimizer,
           load_trainable: Callable[[dict[str, torch.Tensor]], Any], *, restart: bool = False) -> dict[str, Any]:
    """The saved ``state`` of an interrupted run with the same ``config``, its tensors loaded into the model
    (``load_trainable``) and ``optimizer``; ``{}`` to start fresh (``restart`` drops any checkpoint)."""
    if restart:
        remove_checkpoint(out)
    resumed = load_checkpoint(out, config)
    if resumed is None:
        return {}
    tensors, state = resumed
    load_trainable(tensors["trainable"])
    optimizer.load_state_dict(tensors["optimizer"])
    return state


def warmup_linear_decay(optimizer: torch.optim.Optimizer, steps: int, warmup: float,
                        step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the run, then linear decay to 0, positioned at ``step`` (a resumed
    run's optimizer state already holds each group's ``initial_lr``)."""
    warm = max(1, int(warmup * steps))

    def factor(s: int) -> float:
        return min(1.0, (s + 1) / warm) * max(0.0, 1 - max(0, s - warm) / max(1, steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=step - 1)


def remove_checkpoint(out: str | Path) -> None:
    shutil.rmtree(checkpoint_path(out), ignore_errors=True)


def plot_losses(losses: list[float], path: Path, title: str) -> bool:
    """A PNG of the loss curve (and a moving average); ``False`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="loss per step")
    w = max(1, len(losses) // 20)
    if len(losses) > w:
        smooth = [sum(losses[i - w:i]) / w for i in range(w, len(losses) + 1)]
        ax.plot(range(w, len(losses) + 1), smooth, lw=1.6, label=f"moving average ({w})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""Connect to a Ray cluster (or start a local one)."""

from __future__ import annotations


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ...) or start Ray locally.

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)

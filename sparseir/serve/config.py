"""The server's settings: one frozen dataclass, validated once, passed to every worker as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ..errors import UsageError

#: The environment variable that carries the settings to uvicorn's worker processes.
CONFIG_ENV = "SPARSEIR_SERVE_CONFIG"
#: The environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "SPARSEIR_API_KEY"


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``create_app`` needs; the CLI's options map one to one onto these fields."""

    index: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    read_only: bool = False
    api_key: str | None = None
    batch_wait_ms: float = 2.0       #: longest wait to gather concurrent query encodings (0: none)
    max_encode_batch: int = 64       #: most texts per encoder call (1: no micro-batching)
    search_threads: int = 4          #: threads that run searches, explanations and writes
    max_body_bytes: int = 16 << 20   #: larger request bodies get 413
    refresh_seconds: float = 0.5     #: how often to look for a newer commit (0: never)
    ray: bool = False                #: a sharded index searched by one Ray actor per shard
    ray_address: str | None = None   #: the Ray cluster to join (default: start Ray locally)

    def __post_init__(self) -> None:
        checks = {"port": (0, 65535), "workers": (1, 64), "batch_wait_ms": (0, 1000), "max_encode_batch": (1, 4096),
                  "search_threads": (1, 256), "max_body_bytes": (1024, 1 << 31),
                  "refresh_seconds": (0, 3600)}
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                option = "--" + name.replace("_", "-")
                raise UsageError(f"{option} must be in [{lo}, {hi}], got {value}")
        if self.workers > 1 and not self.read_only:
            raise UsageError("--workers > 1 needs --read-only: an index has a single writer, so run the writes "
                             "through one server (or `sparseir add`) and let read-only workers follow its commits")
        if (self.ray or self.ray_address) and self.workers > 1:
            raise UsageError("--ray needs --workers 1: the shard actors serve every request")
        if self.api_key == "":
            raise UsageError("--api-key must not be empty")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The settings a parent process put in :data:`CONFIG_ENV` (uvicorn's workers)."""
        try:
            raw = os.environ[CONFIG_ENV]
        except KeyError:
            raise UsageError(f"{CONFIG_ENV} is not set: start the server with `sparseir serve`") from None
        return cls(**json.loads(raw))

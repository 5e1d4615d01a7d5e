"""Atomic publication of output directories and the writers' lock, shared across the package."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from .errors import LockError


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` directory onto ``final``, replacing any old one by rename.

    ``final`` always names either the old or the new complete directory, never a partial one.
    """
    final = Path(final)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
    os.replace(final, old / "d")
    os.replace(tmp, final)
    shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; on success it replaces ``out``.

    On error the temporary folder is removed and ``out`` is left untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out)


def dir_bytes(path: str | Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def fsync_dir(path: str | Path) -> None:
    """Make a rename or file creation inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably: temp file, fsync, rename, fsync the folder.

    A crash leaves either the old file (or none) or the new one, plus at most a ``.tmp-*`` file
    that the next writer removes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(path.parent)


class FileLock:
    """An exclusive ``flock`` on ``file``, taken on construction and held until :meth:`release`.

    It does not wait: if another open of ``file`` holds it (another process, or this one), this
    raises :class:`~sparseir.errors.LockError` with ``message(holder)``. The kernel releases it
    when the process dies, so a crash never leaves a stale lock. The file holds the holder's pid,
    host and start time (``holder`` in a second taker's message); it is left in place on release.
    Usable as a context manager, which releases on exit.
    """

    def __init__(self, file: Path, message: Callable[[str], str]) -> None:
        self.file = Path(file)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise LockError(message(holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops the ``flock``); a second call does nothing."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

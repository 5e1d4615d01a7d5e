"""The project's user-facing error types.

Every error a user can cause (bad input, a bad option value, a corrupt or incompatible index, a
locked index or output folder) derives from :class:`SparseirError`; its message is meant for the
user as it is.
The CLI prints these with exit code 2 and lets anything else (a bug) show its traceback.
"""

from __future__ import annotations


class SparseirError(Exception):
    """A user-facing error: the message names the file, line, id, option or index at fault."""


class UsageError(SparseirError, ValueError):
    """An argument or option value out of its valid range."""


class LockError(SparseirError):
    """Another writer holds the lock on an index or an output folder; the message names the holder."""

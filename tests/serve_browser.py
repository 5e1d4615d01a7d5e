"""Headless Chromium (Debian's package) for the search page tests; they skip, saying why, without it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(Debian: apt-get install chromium); the search page is not tested here")


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium, bounded in time; --virtual-time-budget lets the page's fetches finish first."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=20000", *args], capture_output=True, text=True, timeout=120)

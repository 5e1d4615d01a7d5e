"""``sparseir serve``: an HTTP search service over one index, with a search page at ``/``.

The pieces, one module per concern:

- :mod:`sparseir.serve.app`: ``create_app(config)``, the FastAPI application (endpoints, errors, limits);
- :mod:`sparseir.serve.engine`: the index, its searchers, the writer and the refresh on new commits;
- :mod:`sparseir.serve.batcher`: micro-batching of concurrent query encodings;
- :mod:`sparseir.serve.models`: the strict request models;
- :mod:`sparseir.serve.metrics`: request counters and latency percentiles;
- :mod:`sparseir.serve.cli`: the ``sparseir serve`` command (imports nothing heavy until it runs).

This package imports nothing at import time, so that the CLI stays fast to start.
"""

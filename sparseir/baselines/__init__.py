"""Baseline retrieval systems for benchmarks: Lucene BM25, dense cosine, Lucene impact search.

Modules are imported on demand (``from sparseir.baselines.bm25 import ...``) since
each pulls in Java or torch.
"""

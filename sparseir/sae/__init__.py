"""Sparse autoencoder (SAE) dictionaries as retrieval encoders.

Pipeline: :mod:`~sparseir.sae.collect` writes base-model activations (token hidden states of a
layer, or sentence embeddings) to a memmapped :mod:`~sparseir.sae.store`; :mod:`~sparseir.sae.train`
streams them through a TopK / BatchTopK / Matryoshka SAE (:mod:`~sparseir.sae.model`) with AuxK;
:mod:`~sparseir.sae.finalize` scans the data for diagnostics and :mod:`~sparseir.sae.labels`, and
:mod:`~sparseir.sae.checkpoint` writes the checkpoint directory that
``sparseir.encoders.sae.SAESparseEncoder`` (``sae:PATH``) loads.
"""

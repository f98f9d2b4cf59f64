"""The retrieval math builder and service share: the metric table, exact scoring and the one top-k
merge, one approximate search (FAISS candidates, exact rescoring) and its per-call FAISS parameters.

Depends only on numpy, faiss, the standard library and index_builder.artifact.errors.
"""

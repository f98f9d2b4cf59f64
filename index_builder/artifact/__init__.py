"""The artifact format builder and service share: errors, layout under the root, manifest, integrity checks.

Depends only on numpy, faiss, pydantic, the standard library and index_builder.retrieval.
"""

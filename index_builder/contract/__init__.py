"""What builder and service share: metric math, manifest, layout, integrity checks, exact scoring.

Depends only on numpy, faiss, pydantic and the standard library.
"""

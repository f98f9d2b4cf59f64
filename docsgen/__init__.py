"""The generated reference pages of the documentation site: each is rendered from the code that holds it.

`python -m docsgen` writes them under `docs/reference/`; `python -m docsgen --check` (and a test) fails
when a committed page differs from what its source renders now.
"""

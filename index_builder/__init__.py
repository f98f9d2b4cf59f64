"""dotcos offline builder: embeddings in, versioned FAISS artifacts out."""

__version__ = "0.1.0"

"""The thin HTTP layer: schemas, routes, error mapping and metrics. No FAISS here."""

"""Sharded builds and Ray: which shard holds a document, the task runner (in-process or Ray), the
sharded pipeline, and joining a Ray cluster (shared with service.scaleout)."""

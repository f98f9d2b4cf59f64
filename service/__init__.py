"""dotcos retrieval service: loads published versions and answers top-k over HTTP."""

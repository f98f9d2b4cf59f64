"""dotcos_client: a Python client for the dotcos retrieval service.

from dotcos_client import Client

with Client("http://127.0.0.1:8000") as dotcos:
    for hit in dotcos.search("items", user_vector, k=10, metric="cosine"):
        print(hit.id, hit.score)
"""

from dotcos_client.client import AsyncClient, Client
from dotcos_client.errors import BadRequest, Conflict, DotcosError, Gone, NotFound, Unavailable
from dotcos_client.models import Change, Document, Documents, Hit, SearchResult

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Change",
    "Client",
    "Conflict",
    "Document",
    "Documents",
    "DotcosError",
    "Gone",
    "Hit",
    "NotFound",
    "SearchResult",
    "Unavailable",
]
__version__ = "0.1.0"

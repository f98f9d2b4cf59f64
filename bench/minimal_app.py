"""The baseline users would write themselves: one FastAPI route, one FAISS call per request.

Run: MINIMAL_INDEX=path/to/dot.faiss MINIMAL_EF=64 uvicorn bench.minimal_app:app --port 8100
"""

from __future__ import annotations

import os

import faiss
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

index = faiss.read_index(os.environ["MINIMAL_INDEX"])
ef_search = int(os.environ.get("MINIMAL_EF", "64"))
app = FastAPI()


class Query(BaseModel):
    vector: list[float]
    k: int = 10


class Hit(BaseModel):
    id: int
    score: float


@app.post("/search")
def search(query: Query) -> list[Hit]:
    vector = np.asarray([query.vector], dtype=np.float32)
    params = faiss.SearchParametersHNSW()
    params.efSearch = max(ef_search, query.k)
    scores, ids = index.search(vector, query.k, params=params)
    return [Hit(id=int(i), score=float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

"""Load documents into a Chroma server (runs in Chroma's own virtualenv, so imports only chromadb/numpy).

Usage: chroma_load.py PORT DOCS.npy NAME SPACE EF_SEARCH  -> prints the collection id
"""

import sys

import chromadb
import numpy as np

BATCH = 5000


def main() -> None:
    port, docs_path, name, space, ef = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    client = chromadb.HttpClient(host="127.0.0.1", port=int(port))
    hnsw = {"space": space, "ef_search": ef, "ef_construction": 128, "max_neighbors": 32}
    collection = client.get_or_create_collection(name, configuration={"hnsw": hnsw})
    docs = np.load(docs_path, mmap_mode="r")
    for start in range(0, len(docs), BATCH):
        block = np.asarray(docs[start : start + BATCH], dtype=np.float32)
        collection.add(ids=[str(i) for i in range(start, start + len(block))], embeddings=block.tolist())
    print(collection.id)


if __name__ == "__main__":
    main()

"""The peers' data: real sentence embeddings, exact top-k by numpy, and tie-aware recall.

bench/data/peers.npz is made by `python -m bench.text_embeddings --docs 50000 --queries 500 --out
bench/data/peers.npz`: Debian package descriptions as documents, Python module docstrings as
queries (a related but different source, as a user tower differs from the item tower), MiniLM,
mean-pooled, not normalized, so dot and cosine rank differently. `python -m bench.peer_data --out F`
writes seeded two-tower vectors in the same form (bench.peers --data F), for runs at 1M documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

K = 10
PEER_DATA = Path("bench/data/peers.npz")
MADE_BY = "python -m bench.text_embeddings --docs 50000 --queries 500 --out bench/data/peers.npz"
TIE = 1e-5


@dataclass
class PeerData:
    docs: np.ndarray
    queries: np.ndarray
    _truth: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.docs.shape[1])

    @cached_property
    def unit_docs(self) -> np.ndarray:
        return self.docs / np.maximum(np.linalg.norm(self.docs, axis=1, keepdims=True), 1e-30)

    def scores(self, metric: str, rows: np.ndarray) -> np.ndarray:
        """True scores of query i against documents rows[i] (numpy, float64)."""
        docs = self.unit_docs if metric == "cosine" else self.docs
        queries = self.queries.astype(np.float64)
        if metric == "cosine":
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        return np.einsum("qd,qkd->qk", queries, docs[rows].astype(np.float64))

    def kth(self, metric: str) -> np.ndarray:
        """The k-th exact score per query (numpy brute force, float64)."""
        if metric not in self._truth:
            docs = (self.unit_docs if metric == "cosine" else self.docs).astype(np.float64)
            queries = self.queries.astype(np.float64)
            if metric == "cosine":
                queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            blocks = [np.partition(block @ docs.T, -K, axis=1)[:, -K] for block in np.array_split(queries, 20)]
            self._truth[metric] = np.concatenate(blocks)
        return self._truth[metric]

    def recall(self, metric: str, rows: np.ndarray) -> float:
        """Tie-aware recall@k of found rows (n, k; -1 for none): a row counts when its true score
        reaches the k-th exact one."""
        kth = self.kth(metric)[:, None]
        valid = rows >= 0
        scores = self.scores(metric, np.where(valid, rows, 0))
        hits = (valid & (scores >= kth - TIE * np.maximum(np.abs(kth), 1))).sum(axis=1)
        return float(np.minimum(hits, K).mean() / K)


def load_peer_data(path: Path = PEER_DATA) -> PeerData:
    if not path.exists():
        raise SystemExit(f"{path} is missing; make it with: {MADE_BY}")
    data = np.load(path)
    return PeerData(np.ascontiguousarray(data["docs"], np.float32), np.ascontiguousarray(data["queries"], np.float32))


def main() -> None:
    """Write a peers data file of seeded two-tower vectors (for the large run: real text at 1M
    documents takes hours to embed on two cores)."""
    import argparse

    from index_builder.synthetic import TwoTowerSpec, two_tower

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    docs, queries = two_tower(TwoTowerSpec(docs=args.docs, queries=args.queries, dim=args.dim, seed=11))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, docs=docs, queries=queries)


if __name__ == "__main__":
    main()

"""Turning index choices into FAISS indexes: factory strings, seeded training, blocked adds.

Every index stores row numbers of the staged corpus as its ids, so a label maps straight
to a row of `vectors.npy` and to an id in `ids.txt`, whatever subset the metric indexes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.progress import Progress
from index_builder.retrieval.faiss_params import inner_index
from index_builder.retrieval.spaces import Layout, faiss_metric

KINDS = ("flat", "hnsw", "ivf", "ivfpq")
FILTER_INDEX_MODES = ("auto", "always", "none")
FILTER_INDEX_MIN_ROWS = 100_000
"""With `auto`, parts of fewer rows get no filter index: an exact scan of any share of them costs a
few milliseconds at most, and at 50,000 rows the measured plan never chose the filter index."""
LOSSY_CODES = ("PQ", "SQ", "LSH", "RaBitQ")
LOSSY_REFINE_FACTOR = 10
# L2 over the MIPS augmentation ranks by |q|^2 + M^2 - 2 q.x in float32, which blurs inner
# products closer than ~eps * M^2; fetching 2k and rescoring exactly restores the true order.
AUGMENTED_REFINE_FACTOR = 2
# How an HNSW graph stores its vectors: float32, or scalar-quantized codes (a quarter or half the
# bytes per distance, so a search touches less memory). The codes keep the graph's ranking but for
# near ties; fetching 2k candidates and rescoring them exactly from the float vectors gives the
# float graph's recall at the same efSearch (bench/results/search_core.md).
HNSW_CODES = {"float32": "", "sq8": "_SQ8", "fp16": "_SQfp16"}
HNSW_CODES_REFINE_FACTOR = 2


@dataclass(frozen=True)
class IndexOptions:
    """What the user asked for with --index and its companion flags."""

    kind: str = "flat"
    hnsw_m: int = 32
    hnsw_codes: str = "float32"
    ef_construction: int = 128
    nlist: int | None = None
    pq_m: int | None = None
    pq_bits: int = 8
    train_size: int = 100_000
    seed: int = 0
    refine_factor: int | None = None
    filter_index: str = "auto"

    def wants_filter_index(self, count: int) -> bool:
        """Whether each metric of a part of `count` rows gets a filter index: only a graph index
        needs one (its search under a selective filter walks through documents that fail it);
        `auto` builds it for parts of at least FILTER_INDEX_MIN_ROWS, `always` for every part."""
        graph = self.kind == "hnsw" or "HNSW" in self.kind.upper()
        wanted = {"auto": count >= FILTER_INDEX_MIN_ROWS, "always": True, "none": False}[self.filter_index]
        return graph and wanted

    def for_filters(self, count: int) -> IndexOptions:
        """The options of the filter index: IVF lists over int8 codes, trained like the index."""
        return IndexOptions(
            kind=f"IVF{default_nlist(count)},SQ8", train_size=self.train_size, seed=self.seed, filter_index="none"
        )


@dataclass(frozen=True)
class IndexPlan:
    """A resolved index: the label users gave, the factory string and the rescoring depth."""

    kind: str
    factory: str
    dim: int
    refine_factor: int
    ef_construction: int | None

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"


MIN_POINTS_PER_LIST = 39  # below this many training points per centroid FAISS's k-means warns


def default_nlist(count: int) -> int:
    """About 4*sqrt(n) lists, but never fewer than MIN_POINTS_PER_LIST training points per list."""
    return max(1, min(int(4 * math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def training_size(index: faiss.Index, train_size: int, available: int) -> int:
    """--train-size, raised so that every IVF list gets its minimum of training points (at 1M
    documents the default 4000 lists need 156k, above the 100k default)."""
    ivf = faiss.try_extract_index_ivf(index)
    lists = ivf.nlist if ivf is not None else 0
    return min(max(train_size, MIN_POINTS_PER_LIST * lists), available)


def default_pq_m(dim: int) -> int:
    """The largest divisor of dim that is at most dim/4 (at least 1)."""
    return max((m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0), default=1)


def plan_index(options: IndexOptions, dim: int, count: int, augmented: bool = False) -> IndexPlan:
    """Resolve --index into a factory string, validating the companion flags.

    `dim` is the indexed dimension: one more than the corpus under the MIPS augmentation.
    """
    kind = options.kind
    ef_construction = None
    if options.hnsw_codes != "float32" and kind != "hnsw":
        raise InputError(f"--hnsw-codes {options.hnsw_codes} applies to --index hnsw, not {kind!r}")
    if kind == "flat":
        factory = "Flat"
    elif kind == "hnsw":
        factory = f"HNSW{options.hnsw_m}{HNSW_CODES[options.hnsw_codes]}"
        ef_construction = options.ef_construction
    elif kind in ("ivf", "ivfpq"):
        nlist = options.nlist or default_nlist(count)
        if nlist > count:
            raise InputError(f"--nlist {nlist} is larger than the {count} documents to index")
        factory = f"IVF{nlist},Flat"
        if kind == "ivfpq":
            pq_m = options.pq_m or default_pq_m(dim)
            if dim % pq_m:
                extra = f" ({dim - 1} + 1 for the MIPS augmentation)" if augmented else ""
                raise InputError(f"--pq-m {pq_m} must divide the indexed dimension {dim}{extra}")
            # "np": no polysemous training, which costs 20x the PQ training and serves only
            # Hamming pre-filtering, which dotcos does not use (it rescores exactly instead).
            factory = f"IVF{nlist},PQ{pq_m}x{options.pq_bits}np"
    else:
        factory, kind = options.kind, "factory"
    lossy = any(code in factory for code in LOSSY_CODES)
    default_refine = LOSSY_REFINE_FACTOR if lossy else (AUGMENTED_REFINE_FACTOR if augmented else 1)
    if kind == "hnsw" and options.hnsw_codes != "float32":
        default_refine = max(HNSW_CODES_REFINE_FACTOR, AUGMENTED_REFINE_FACTOR if augmented else 1)
    refine = options.refine_factor or default_refine
    return IndexPlan(kind, factory, dim, refine, ef_construction)


def new_index(plan: IndexPlan, layout: Layout) -> faiss.Index:
    """An empty index for the plan that accepts row numbers as ids."""
    try:
        index = faiss.index_factory(plan.dim, plan.factory, faiss_metric(layout))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].rsplit(": ", 1)[-1] if str(exc).strip() else "refused"
        raise InputError(
            f"--index {plan.factory!r} is none of the kinds {', '.join(KINDS)}, nor a FAISS index_factory "
            f"string this dimension takes, such as 'IVF1024,SQ8' or 'HNSW32,Flat' ({detail})"
        ) from None
    if plan.ef_construction is not None:
        inner = faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = plan.ef_construction
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        return index
    if faiss.try_extract_index_ivf(index) is not None:
        return index
    return faiss.IndexIDMap(index)


PrepareRows = Callable[[np.ndarray], np.ndarray]


def sample_rows(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded sample of at most `limit` of `rows`, sorted (all of them when there are no more):
    the training sample of an index and the build's self-check queries."""
    return np.sort(np.random.default_rng(seed).choice(rows, min(limit, len(rows)), replace=False))


def reserve_codes(index: faiss.Index, count: int) -> None:
    """Pre-size the float storage of flat and HNSW indexes so adds never reallocate.

    FAISS keeps flat codes in a std::vector that doubles as it grows, so an add that crosses
    a power of two briefly holds the old and the new buffer; growing once to the final size
    and shrinking back keeps the capacity and avoids that peak.
    """
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if isinstance(inner, faiss.IndexFlatCodes) and inner.ntotal == 0:
        inner.codes.resize(count * inner.code_size)
        inner.codes.resize(0)


def train_and_add(
    index: faiss.Index,
    rows: np.ndarray,
    prepare: PrepareRows,
    options: IndexOptions,
    block_rows: int,
    progress: Progress,
) -> None:
    """Train on a seeded sample of the indexed rows, then add all of them in blocks."""
    if not index.is_trained:
        size = training_size(index, options.train_size, len(rows))
        sample = sample_rows(rows, size, options.seed)
        with progress.stage("train", size):
            try:
                index.train(prepare(sample))
            except RuntimeError as exc:
                detail = str(exc).strip().splitlines()[-1]
                raise InputError(f"training failed ({detail}); lower --nlist or raise --train-size") from None
    reserve_codes(index, len(rows))
    with progress.stage("add", len(rows)) as bar:
        for start in range(0, len(rows), block_rows):
            chunk = rows[start : start + block_rows]
            index.add_with_ids(prepare(chunk), chunk)
            bar.update(len(chunk))

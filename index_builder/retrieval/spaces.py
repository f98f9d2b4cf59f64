"""The metric table: how documents and queries are mapped for each metric, and how a score comes back.

Every metric dotcos serves is an inner product after two transforms, so one kind of
FAISS index (inner product, or L2 over the MIPS augmentation) serves all of them:

    score(q, x) = prepare_query(q) . prepare_document(x)

    metric          document x  ->                    query q  ->
    dot             x                                 q
    cosine          x / |x|                           q / |q|
    norm_pow:A      |x|^A * x / |x|                   q / |q|
    norm_sigmoid    sigmoid((|x|-min)/(max-min)) x/|x|   q / |q|
    covariance      W x / |W x|   (W = C^1/2)         W q / |W q|

Exact scores are computed from the raw float32 vectors without materializing prepared
documents: score = (W' p) . x * doc_scale(x), where p is the prepared query, W' the
linear map's transpose (identity but for covariance) and doc_scale the per-document
factor of the table. The service never trusts raw FAISS scores (L2 distances are
squared and shifted, PQ scores are approximate); it rescores every returned document
this way (index_builder.retrieval.scoring), which is what "the true units of the metric"
means here.

MIPS-to-L2 (Bachrach et al. 2014): with M >= max |y|, documents become [y, sqrt(M^2-|y|^2)]
and queries [p, 0], so |p' - y'|^2 = |p|^2 + M^2 - 2 p.y and the L2 nearest neighbour is
the largest inner product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import faiss
import numpy as np

from index_builder.artifact.errors import InvalidMetric

FloatArray = np.ndarray


class MetricKind(StrEnum):
    """The closed set of metric families; `norm_pow` carries an exponent."""

    DOT = "dot"
    COSINE = "cosine"
    NORM_POW = "norm_pow"
    NORM_SIGMOID = "norm_sigmoid"
    COVARIANCE = "covariance"


class Layout(StrEnum):
    """How prepared documents are stored in FAISS."""

    IP = "ip"
    L2_AUGMENTED = "l2_augmented"
    L2_RANGED = "l2_ranged"

    @property
    def augmented(self) -> bool:
        """Stored through the MIPS-to-L2 augmentation (one index, or one per norm range)."""
        return self is not Layout.IP


METRIC_SYNTAX = "dot, cosine, norm_pow:ALPHA, norm_sigmoid, covariance"


@dataclass(frozen=True)
class MetricStats:
    """Corpus statistics a metric needs, fitted once at build time and stored in the artifact."""

    norm_min: float = 0.0
    norm_max: float = 0.0
    whitening: FloatArray | None = field(default=None, compare=False)


DocWeight = Callable[[FloatArray, float, MetricStats], FloatArray]


def _unit_weight(norms: FloatArray, alpha: float, stats: MetricStats) -> FloatArray:
    return np.ones_like(norms)


def _pow_weight(norms: FloatArray, alpha: float, stats: MetricStats) -> FloatArray:
    out = np.zeros_like(norms, dtype=np.float64)
    np.power(norms, alpha, out=out, where=norms > 0)
    return out


def _sigmoid_weight(norms: FloatArray, alpha: float, stats: MetricStats) -> FloatArray:
    span = stats.norm_max - stats.norm_min
    z = (norms - stats.norm_min) / span if span > 0 else np.zeros_like(norms)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class MetricRule:
    """One row of the metric table: what each side of the inner product becomes."""

    normalizes: bool
    doc_weight: DocWeight | None
    whitened: bool
    needs_alpha: bool = False


METRIC_TABLE: dict[MetricKind, MetricRule] = {
    MetricKind.DOT: MetricRule(normalizes=False, doc_weight=None, whitened=False),
    MetricKind.COSINE: MetricRule(normalizes=True, doc_weight=_unit_weight, whitened=False),
    MetricKind.NORM_POW: MetricRule(normalizes=True, doc_weight=_pow_weight, whitened=False, needs_alpha=True),
    MetricKind.NORM_SIGMOID: MetricRule(normalizes=True, doc_weight=_sigmoid_weight, whitened=False),
    MetricKind.COVARIANCE: MetricRule(normalizes=True, doc_weight=_unit_weight, whitened=True),
}


@dataclass(frozen=True)
class Metric:
    """A parsed metric name such as `dot` or `norm_pow:0.5`."""

    kind: MetricKind
    alpha: float = 0.0

    @property
    def name(self) -> str:
        """The canonical name used in manifests, URLs and responses."""
        if self.kind is MetricKind.NORM_POW:
            return f"norm_pow:{self.alpha:g}"
        return self.kind.value

    @property
    def rule(self) -> MetricRule:
        return METRIC_TABLE[self.kind]

    @classmethod
    def parse(cls, text: str) -> Metric:
        """Parse a metric name; raise InvalidMetric naming the valid forms."""
        head, _, arg = text.strip().partition(":")
        try:
            kind = MetricKind(head)
        except ValueError:
            raise InvalidMetric(f"unknown metric {text!r}; expected one of: {METRIC_SYNTAX}") from None
        if not METRIC_TABLE[kind].needs_alpha:
            if arg:
                raise InvalidMetric(f"metric {head!r} takes no parameter, got {text!r}")
            return cls(kind)
        try:
            alpha = float(arg)
        except ValueError:
            raise InvalidMetric(f"metric {text!r} needs a numeric exponent, e.g. norm_pow:0.5") from None
        if not math.isfinite(alpha):
            raise InvalidMetric(f"metric {text!r} needs a finite exponent")
        return cls(kind, alpha)


def parse_metric_list(text: str) -> list[Metric]:
    """Parse a comma-separated metric list, rejecting empties and duplicates."""
    metrics = [Metric.parse(part) for part in text.split(",") if part.strip()]
    if not metrics:
        raise InvalidMetric(f"no metric given; expected a comma-separated list of: {METRIC_SYNTAX}")
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidMetric(f"metric {duplicates[0]!r} listed twice")
    return metrics


def row_norms(x: FloatArray) -> FloatArray:
    """L2 norm of each row, accumulated in float64 (without a float64 copy of x)."""
    return np.asarray(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)))


def _safe_inverse(values: FloatArray) -> FloatArray:
    out = np.zeros_like(values, dtype=np.float64)
    np.divide(1.0, values, out=out, where=values > 0)
    return out


@dataclass(frozen=True)
class MetricSpace:
    """A metric together with the corpus statistics it was fitted with."""

    metric: Metric
    stats: MetricStats = MetricStats()

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def normalizes_queries(self) -> bool:
        """Whether a zero-norm query has no defined score under this metric."""
        return self.metric.rule.normalizes

    @property
    def indexes_zero_documents(self) -> bool:
        """Only dot gives zero-norm documents a meaningful score; others leave them out."""
        return not self.metric.rule.normalizes

    def _linear(self, x: FloatArray) -> FloatArray:
        """x mapped by the metric's linear transform (float32; x itself when there is none)."""
        w = self.stats.whitening
        if self.metric.rule.whitened:
            if w is None:
                raise InvalidMetric(f"metric {self.name!r} needs its whitening matrix")
            return np.asarray((np.asarray(x, dtype=np.float64) @ w.T).astype(np.float32))
        return np.asarray(x, dtype=np.float32)

    def doc_scale(self, x: FloatArray) -> FloatArray:
        """Per-document factor s with prepared document = s * linear(x); 0 for zero vectors."""
        rule = self.metric.rule
        if rule.doc_weight is None:
            return np.ones(len(x), dtype=np.float64)
        mapped_norms = row_norms(self._linear(x))
        weight = rule.doc_weight(mapped_norms, self.metric.alpha, self.stats)
        return np.asarray(weight * _safe_inverse(mapped_norms))

    def prepare_documents(self, x: FloatArray) -> FloatArray:
        """Documents as stored in the inner-product index (a new float32 array)."""
        scaled = self._linear(x) * self.doc_scale(x).astype(np.float32)[:, None]
        return np.ascontiguousarray(scaled, dtype=np.float32)

    def prepare_queries(self, q: FloatArray) -> FloatArray:
        """Queries as sent to the inner-product index (float32, C-contiguous; zero rows stay zero).

        A new array whenever a value changes; under dot a float32 C-contiguous input comes back
        as it is (never written to afterwards), which spares a copy on every request.
        """
        mapped = self._linear(q)
        if self.metric.rule.normalizes:
            mapped = mapped * _safe_inverse(row_norms(mapped)).astype(np.float32)[:, None]
        return np.ascontiguousarray(mapped, dtype=np.float32)

    def raw_from_prepared(self, prepared: FloatArray) -> FloatArray:
        """p' (float32) with score = (p' . x) * doc_scale(x) for raw documents x, from prepared queries p."""
        if self.metric.rule.whitened and self.stats.whitening is not None:
            return np.asarray((prepared.astype(np.float64) @ self.stats.whitening).astype(np.float32))
        return prepared


def fit_metric_space(metric: Metric, norms: FloatArray, whitening: FloatArray | None) -> MetricSpace:
    """Attach the corpus statistics a metric needs (norm range, whitening matrix)."""
    stats = MetricStats(
        norm_min=float(norms.min()) if len(norms) else 0.0,
        norm_max=float(norms.max()) if len(norms) else 0.0,
        whitening=whitening if metric.rule.whitened else None,
    )
    return MetricSpace(metric, stats)


def faiss_metric(layout: Layout) -> int:
    """The FAISS metric constant an index of this layout is built with."""
    return faiss.METRIC_L2 if layout.augmented else faiss.METRIC_INNER_PRODUCT


def augment_documents(y: FloatArray, max_norm: float) -> FloatArray:
    """MIPS-to-L2: append sqrt(M^2 - |y|^2) so every document has norm M."""
    sq = np.einsum("ij,ij->i", y.astype(np.float64), y.astype(np.float64))
    extra = np.sqrt(np.maximum(max_norm * max_norm - sq, 0.0))
    return np.ascontiguousarray(np.hstack([y, extra[:, None]]), dtype=np.float32)


def norm_range_bounds(norms: FloatArray, ranges: int) -> list[float]:
    """Upper norm bound of each of `ranges` equal-count norm ranges (fewer when norms repeat).

    Norm-ranged MIPS augments each range with its own bound instead of the corpus maximum, so
    the extra coordinate stays small next to the vector in every range.
    """
    quantiles = np.quantile(norms.astype(np.float64), np.arange(1, ranges + 1) / ranges)
    quantiles[-1] = float(norms.max())
    return [float(b) for b in np.unique(quantiles)]


def norm_range_of(norms: FloatArray, bounds: list[float]) -> np.ndarray:
    """The range of every norm: the first range whose bound is not below it."""
    return np.minimum(np.searchsorted(np.asarray(bounds), norms, side="left"), len(bounds) - 1)


def augment_queries(p: FloatArray) -> FloatArray:
    """MIPS-to-L2: queries get a zero extra coordinate."""
    zeros = np.zeros((len(p), 1), dtype=np.float32)
    return np.ascontiguousarray(np.hstack([p, zeros]), dtype=np.float32)

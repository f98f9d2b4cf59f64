"""The manifest: the typed description of one published version, shared by builder and service."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from index_builder.artifact.attributes import DICTIONARY_FILE, AttributeType, attribute_files
from index_builder.artifact.errors import ArtifactError
from index_builder.artifact.layout import MANIFEST_FILE
from index_builder.retrieval.spaces import Layout, Metric, MetricSpace, MetricStats

SCHEMA_VERSION = 1
SHARDED_SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION, SHARDED_SCHEMA_VERSION})
LIFECYCLE_FIELDS = ("carried", "set_aside", "changes", "restored_from", "model")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FileEntry(_Model):
    sha256: str
    bytes: int


class SweepPoint(_Model):
    value: int
    recall_at_10: float


class SelfCheck(_Model):
    """Recall@10 of an approximate index against exact search, and how it was measured."""

    recall_at_10: float
    queries: int
    query_source: str
    target_recall: float
    param: str | None = None
    sweep: list[SweepPoint] = Field(default_factory=list)


class FilterIndexEntry(_Model):
    """The filter index of a metric: its FAISS factory string, the layout it was built in, how
    many candidates per result it rescores exactly, and its lists."""

    factory: str
    layout: Layout
    refine_factor: int
    nlist: int
    max_norm: float | None = None


class ValueIndexEntry(_Model):
    """An index of only the documents carrying one keyword value, one file per part next to the
    index (value_file, numbered in the list's order): a filter requiring the value searches it."""

    attribute: str
    value: str
    factory: str
    layout: Layout
    refine_factor: int = 1


class FilterRoute(_Model):
    """A way a search among one selectivity band's share of the documents keeps the recall target,
    as the build measured it: through the `index` (its knob raised by `boost`,
    retrieval.ann.filtered_knob) or the `filter_index` (at `nprobe`), with the recall it reached
    and the microseconds a query took per part on the build machine."""

    structure: Literal["index", "filter_index"]
    boost: int | None = None
    nprobe: int | None = None
    recall_at_10: float | None = None
    micros: float | None = None


class IndexEntry(_Model):
    kind: str
    factory: str
    layout: Layout
    file: str | None = None
    count: int
    exact: bool
    max_norm: float | None = None
    range_bounds: list[float] = Field(default_factory=list)
    refine_factor: int = 1
    search_params: dict[str, int] = Field(default_factory=dict)
    self_check: SelfCheck | None = None
    layout_trials: dict[str, str] = Field(default_factory=dict)
    filter_index: FilterIndexEntry | None = None
    """The second structure filtered searches may take: an IVF index over int8 codes of the same
    rows, one file per part next to the index (filter_file)."""
    value_indexes: list[ValueIndexEntry] = Field(default_factory=list)
    """Indexes of the documents carrying a frequent keyword value (index_builder.value_indexes)."""
    filter_plan: dict[str, list[FilterRoute]] = Field(default_factory=dict)
    """Per selectivity band, the ways the build measured that keep the recall target (none: only
    an exact scan does); the planner takes the cheapest, an exact scan included."""
    exact_micros: dict[str, float] = Field(default_factory=dict)
    """Per selectivity band, what an exact scan of its passing documents cost (microseconds per
    query and part): the planner's price of a scan at the request's own selectivity."""

    @model_validator(mode="before")
    @classmethod
    def _planned(cls, raw: Any) -> Any:
        """A version built before filter plans recorded only `filter_boosts` (per band, the boost
        of the index's knob, or None for an exact scan): read as the same plan, costs unmeasured."""
        if isinstance(raw, dict) and raw.get("filter_boosts") and not raw.get("filter_plan"):
            raw = {**raw}
            raw["filter_plan"] = {
                band: [] if boost is None else [{"structure": "index", "boost": boost}]
                for band, boost in raw.pop("filter_boosts").items()
            }
        return raw

    def files_for(self, base: str) -> list[str]:
        """The FAISS files behind one part's index of this metric: `base`, or one per norm range."""
        return [range_file(base, r) for r in range(len(self.range_bounds))] if self.range_bounds else [base]


def filter_file(name: str) -> str:
    """A part's filter index next to its index `name`: dot.faiss -> dot.filter.faiss."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.filter.{suffix}" if dot else f"{name}.filter"


def value_file(name: str, at: int) -> str:
    """A value index next to the index `name`: dot.faiss -> dot.v00.faiss for the first."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.v{at:02d}.{suffix}" if dot else f"{name}.v{at:02d}"


def range_file(name: str, r: int) -> str:
    """A norm range's file next to `name`: dot.faiss -> dot.r00.faiss."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.r{r:02d}.{suffix}" if dot else f"{name}.r{r:02d}"


class MetricEntry(_Model):
    name: str
    norm_min: float = 0.0
    norm_max: float = 0.0
    whitening_file: str | None = None
    index: IndexEntry


class AttributeEntry(_Model):
    """One filterable attribute: its type, nulls and (keywords) number of distinct values."""

    type: AttributeType
    null_count: int
    distinct: int | None = None


class ShardEntry(_Model):
    """One shard's files: its documents' raw vectors and ids, and one index per metric."""

    name: str
    count: int
    vectors_file: str
    ids_file: str
    index_files: dict[str, str]
    index_counts: dict[str, int]


class ChangeSpan(_Model):
    """`count` data changes at journal positions first..last (lifecycle records between them are
    not counted), and why they were set aside, where they were."""

    first: int
    last: int
    count: int
    reason: str | None = None


class CarriedEntry(_Model):
    """The changes a version carries in `file` (a restored one's, or kept from one): they apply to
    it before the journal's. Copies of them sit in the journal at positions first..last, set
    aside for every other version; that is all they are there for: a build that discards them
    leaves them re-appliable."""

    file: str
    first: int
    last: int


class NormProfile(_Model):
    min: float
    median: float
    p99: float
    max: float
    zero_count: int


class Manifest(_Model):
    schema_version: int
    collection: str
    version: str
    created_at: datetime
    dim: int
    count: int
    vectors_file: str | None = None
    ids_file: str | None = None
    metrics: dict[str, MetricEntry]
    not_built: dict[str, str] = Field(default_factory=dict)
    norm_profile: NormProfile
    norm_bias_top5pct: float | None = None
    faiss_version: str
    dotcos_version: str
    build_params: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileEntry]
    shards: list[ShardEntry] = Field(default_factory=list)
    shard_key: str | None = None
    attributes: dict[str, AttributeEntry] = Field(default_factory=dict)
    journal_position: int = 0
    """The fold point: the journal's data changes at or before it never apply to this version
    (they are in its documents, or were left out on purpose; artifact.lifecycle)."""
    carried: CarriedEntry | None = None
    set_aside: list[ChangeSpan] = Field(default_factory=list)
    """Spans of changes this version takes out of every version's view once it is activated."""
    changes: dict[str, ChangeSpan] = Field(default_factory=dict)
    """What the build did with the changes pending on the version it replaced: folded, kept,
    discarded, carried, set_aside."""
    restored_from: dict[str, str | int] | None = None
    model: str | None = None
    """The embedding model (the user tower's partner) the documents come from (`build --model`)."""

    @property
    def sharded(self) -> bool:
        return bool(self.shards)

    def parts(self) -> list[ShardEntry]:
        """The shards of this version; an unsharded version is one part made of its top-level files."""
        if self.shards:
            return list(self.shards)
        if self.vectors_file is None or self.ids_file is None:
            raise ArtifactError(f"manifest of {self.collection}/{self.version} names no vectors or ids file")
        files = {name: m.index.file for name, m in self.metrics.items() if m.index.file}
        if len(files) != len(self.metrics):
            raise ArtifactError(f"manifest of {self.collection}/{self.version} names no index file")
        return [
            ShardEntry(
                name="",
                count=self.count,
                vectors_file=self.vectors_file,
                ids_file=self.ids_file,
                index_files=files,
                index_counts={n: m.index.count for n, m in self.metrics.items()},
            )
        ]

    def part_index_files(self, part: ShardEntry, metric: str) -> list[str]:
        """The FAISS files of one metric in one part."""
        return self.metrics[metric].index.files_for(part.index_files[metric])

    def part_filter_file(self, part: ShardEntry, metric: str) -> str | None:
        """The filter index of one metric in one part (None when the metric has none)."""
        return filter_file(part.index_files[metric]) if self.metrics[metric].index.filter_index else None

    def part_value_files(self, part: ShardEntry, metric: str) -> list[str]:
        """The value indexes of one metric in one part, in the order the manifest lists them."""
        entries = self.metrics[metric].index.value_indexes
        return [value_file(part.index_files[metric], at) for at in range(len(entries))]

    def part_structure_files(self, part: ShardEntry) -> list[str]:
        """Every FAISS file of one part: each metric's index files, filter index and value indexes."""
        files = [f for metric in part.index_files for f in self.part_index_files(part, metric)]
        files += [f for metric in part.index_files for f in self.part_value_files(part, metric)]
        return files + [f for metric in part.index_files if (f := self.part_filter_file(part, metric))]

    def attribute_types(self) -> dict[str, AttributeType]:
        return {name: entry.type for name, entry in self.attributes.items()}

    def attribute_files(self, part: ShardEntry) -> list[str]:
        """The attribute files of one part, and the shared dictionaries (none without attributes)."""
        if not self.attributes:
            return []
        return [*attribute_files(self.attribute_types(), part.name), DICTIONARY_FILE]

    def metric_space(self, name: str, version_path: Path) -> MetricSpace:
        """Rebuild the fitted metric space of one built metric from this version's files."""
        entry = self.metrics[name]
        whitening = None
        if entry.whitening_file:
            whitening = np.load(version_path / entry.whitening_file, allow_pickle=False)
        stats = MetricStats(entry.norm_min, entry.norm_max, whitening)
        return MetricSpace(Metric.parse(entry.name), stats)

    def to_json(self) -> str:
        """The manifest file's text; unsharded versions keep exactly the schema-1 fields."""
        exclude = set() if self.shards else {"shards", "shard_key"}
        if not self.attributes:
            exclude.add("attributes")
        exclude |= {name for name in ("journal_position", *LIFECYCLE_FIELDS) if not getattr(self, name)}
        return json.dumps(self.model_dump(mode="json", exclude=exclude), indent=2) + "\n"


def read_manifest(version_path: Path) -> Manifest:
    """Load and validate a manifest, refusing schema versions this code does not know."""
    path = version_path / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is unreadable: {exc}") from None
    schema = raw.get("schema_version") if isinstance(raw, dict) else None
    if schema not in SUPPORTED_SCHEMA_VERSIONS:
        raise ArtifactError(
            f"{path} has schema_version {schema!r}; this dotcos reads {sorted(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path} is invalid at {where}: {first['msg']}") from None

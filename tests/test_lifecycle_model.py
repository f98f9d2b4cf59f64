"""The data lifecycle against a model: random interleavings of writes (upsert, delete, attribute
changes), builds from exports (keeping, folding through a position, or discarding the pending
changes), builds --from-current, activations, point-in-time restores, snapshots restored, gc and
reapply. After every step the service's exact answers, count, stored attributes, /score lookups
and a filter equal the model's: nothing lost, nothing resurrected.

The model keeps its own documents per version and its own records; it takes from the system only
the numbering of journal positions (the lifecycle records between data changes take positions
too), never what a change did.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from index_builder.artifact.integrity import verify_checksums
from index_builder.artifact.journal import Journal
from index_builder.artifact.layout import list_versions, read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.cli import main as build_main
from tests.conftest import in_process
from tests.service.oracle import true_scores

DIM, BASE, POOL = 6, 24, 36
TOKEN = "model-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BRANDS = ["acme", "bolt", "cora"]
IDS = [f"d{i:02d}" for i in range(POOL)]
SCHEMA = pa.schema(
    [("id", pa.string()), ("vector", pa.list_(pa.float32())), ("brand", pa.string()), ("price", pa.float64())]
)
Doc = tuple[np.ndarray, dict[str, Any]]


@dataclass(frozen=True, eq=False)
class Record:
    """A data change as the model knows it: what it does, at the position the journal gave it."""

    position: int
    op: str
    ids: tuple[str, ...]
    vectors: tuple[np.ndarray, ...] = ()
    attributes: tuple[dict[str, Any], ...] = ()
    patch: dict[str, Any] = field(default_factory=dict)


@dataclass
class Version:
    docs: dict[str, Doc]
    fold: int
    carried: list[Record] = field(default_factory=list)


def apply(docs: dict[str, Doc], records: list[Record]) -> dict[str, Doc]:
    """Records applied in order to a copy of `docs`."""
    out = {i: (v, dict(a)) for i, (v, a) in docs.items()}
    for record in records:
        if record.op == "delete":
            for doc_id in record.ids:
                out.pop(doc_id, None)
        elif record.op == "upsert":
            for doc_id, vector, attrs in zip(record.ids, record.vectors, record.attributes, strict=True):
                out[doc_id] = (vector, {"brand": attrs.get("brand"), "price": attrs.get("price")})
        else:
            for doc_id in record.ids:
                if doc_id in out:
                    out[doc_id][1].update(record.patch)
    return out


def in_spans(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= position <= b for a, b in spans)


class Lifecycle(RuleBasedStateMachine):
    """The collection `c` under random operations, checked against the model after each."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="dotcos-model-"))
        self.root = self.tmp / "root"
        self.rng = np.random.default_rng(0)
        self.queries = self.rng.standard_normal((2, DIM)).astype(np.float32)
        self.versions: dict[str, Version] = {}
        self.order: list[str] = []
        self.records: list[Record] = []
        self.spans: list[tuple[int, int]] = []
        self.reapplied: set[int] = set()
        self.history: list[tuple[int, str, list[Record], dict[str, Doc]]] = []
        self.snapshots: list[tuple[Path, dict[str, Doc], list[Record]]] = []
        self.exports = 0
        self.context: Any = None
        self.client: httpx.Client | None = None

    # -- the model -------------------------------------------------------------------------------

    @property
    def active(self) -> str:
        return read_current(self.root, "c")

    def after(self, position: int) -> list[Record]:
        """The data changes after `position` that are not set aside."""
        return [r for r in self.records if r.position > position and not in_spans(r.position, self.spans)]

    def pending(self) -> list[Record]:
        version = self.versions[self.active]
        return [*version.carried, *self.after(version.fold)]

    def state(self) -> dict[str, Doc]:
        return apply(self.versions[self.active].docs, self.pending())

    def end(self) -> int:
        journal = Journal(self.root, "c")
        journal.read_new()
        return journal.position

    def mark(self) -> None:
        """An operation boundary: the state as it stood at the journal's end now."""
        self.history.append((self.end(), self.active, list(self.pending()), self.state()))

    def learn_copies(self, before: int, originals: list[Record]) -> list[Record]:
        """The records appended at positions before+1.. as copies of `originals`, in order."""
        copies = [
            Record(before + 1 + at, r.op, r.ids, r.vectors, r.attributes, r.patch) for at, r in enumerate(originals)
        ]
        self.records.extend(copies)
        return copies

    def adopt(self, version: Version) -> None:
        self.versions[self.active] = version
        self.order.append(self.active)
        for name in list_versions(self.root, "c"):
            path = version_dir(self.root, "c", name)
            verify_checksums(read_manifest(path), path)

    # -- the system ------------------------------------------------------------------------------

    def cli(self, *argv: str) -> int:
        return build_main([argv[0], "--name", "c", "--root", str(self.root), *argv[1:]])

    def export(self, docs: dict[str, Doc]) -> Path:
        self.exports += 1
        path = self.tmp / f"export-{self.exports}.parquet"
        ids = sorted(docs)
        table = pa.table(
            {
                "id": ids,
                "vector": [docs[i][0].tolist() for i in ids],
                "brand": [docs[i][1].get("brand") for i in ids],
                "price": [docs[i][1].get("price") for i in ids],
            },
            schema=SCHEMA,
        )
        pq.write_table(table, path)
        return path

    def build_export(self, docs: dict[str, Doc], *flags: str) -> int:
        path = self.export(docs)
        return self.cli(
            "build", "--input", str(path), "--attributes", "brand,price", "--index", "flat", "--quiet", *flags
        )

    def sync(self) -> None:
        """The service on CURRENT with every journal record applied."""
        assert self.client is not None
        self.client.post("/v1/admin/reload", headers=AUTH)
        end, active = self.end(), self.active
        for _ in range(400):
            info = self.client.get("/v1/collections/c").json()
            if info["version"] == active and info["changes"]["journal_position"] >= end:
                return
            self.client.post("/v1/admin/reload", headers=AUTH)
        raise AssertionError(f"service did not catch up with {active} at {end}: {info}")

    # -- set-up ----------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        docs = {
            i: (self.rng.standard_normal(DIM).astype(np.float32), {"brand": BRANDS[n % 3], "price": float(n)})
            for n, i in enumerate(IDS[:BASE])
        }
        assert self.build_export(docs) == 0
        self.adopt(Version(docs, 0))
        self.context = in_process(
            self.root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_REFRESH_S="0.02", DOTCOS_RELOAD_INTERVAL="0"
        )
        self.client = self.context.__enter__()
        self.mark()

    def teardown(self) -> None:
        if self.context is not None:
            self.context.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- writes ----------------------------------------------------------------------------------

    def write(self, op: str, body: dict[str, Any], standing_only: bool) -> None:
        assert self.client is not None
        standing = self.state()
        reply = self.client.post(f"/v1/collections/c/{op}", json=body, headers=AUTH)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        ids = tuple(i for i in body["ids"] if i in standing) if standing_only else tuple(body["ids"])
        assert answer["unknown"] == [i for i in body["ids"] if i not in ids]
        if ids:
            vectors = tuple(np.asarray(v, np.float32) for v in body.get("vectors", ()))
            attributes = tuple(a or {} for a in body.get("attributes") or [None] * len(vectors))
            patch = {**{k: None for k in body.get("unset", [])}, **body.get("set", {})}
            self.records.append(Record(answer["position"], op, ids, vectors, attributes, patch))
        self.mark()

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True), data=st.data())
    def upsert(self, ids: list[str], data: st.DataObject) -> None:
        vectors = [(self.rng.standard_normal(DIM) * self.rng.uniform(0.5, 2)).astype(np.float32).tolist() for _ in ids]
        attributes = [
            data.draw(
                st.none()
                | st.fixed_dictionaries({}, optional={"brand": st.sampled_from(BRANDS), "price": st.floats(0, 9)})
            )
            for _ in ids
        ]
        self.write("upsert", {"ids": ids, "vectors": vectors, "attributes": attributes}, standing_only=False)

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True))
    def delete(self, ids: list[str]) -> None:
        self.write("delete", {"ids": ids}, standing_only=True)

    @rule(
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
        brand=st.sampled_from(BRANDS),
        unset_price=st.booleans(),
    )
    def set_attributes(self, ids: list[str], brand: str, unset_price: bool) -> None:
        body: dict[str, Any] = {"ids": ids, "set": {"brand": brand}, "unset": ["price"] if unset_price else []}
        self.write("attributes", body, standing_only=True)

    # -- builds ----------------------------------------------------------------------------------

    @rule(at=st.integers(0, 10**6), mode=st.sampled_from(["keep", "through", "discard"]), through=st.integers(0, 10**6))
    def build_from_an_export(self, at: int, mode: str, through: int) -> None:
        _, _, _, docs = self.history[at % len(self.history)]
        if not docs:
            return
        active = self.versions[self.active]
        end = self.end()
        if mode == "keep":
            assert self.build_export(docs) == 0
            self.adopt(Version(docs, active.fold, active.carried))
        elif mode == "discard":
            journal = self.after(active.fold)
            assert self.build_export(docs, "--discard-changes") == 0
            if journal:
                self.spans.append((journal[0].position, journal[-1].position))
            self.adopt(Version(docs, end))
        else:
            position = through % (end + 1)
            code = self.build_export(docs, "--changes-included-through", str(position))
            if active.carried and position < active.fold:
                assert code == 2
                return
            assert code == 0
            self.adopt(Version(docs, position))
        self.mark()

    @rule()
    def build_from_current(self) -> None:
        state = self.state()
        if not state:
            return
        end = self.end()
        assert self.cli("build", "--from-current", "--quiet") == 0
        self.adopt(Version(state, end))
        self.mark()

    @rule(pick=st.integers(0, 10**6))
    def activate(self, pick: int) -> None:
        kept = list_versions(self.root, "c")
        name = kept[pick % len(kept)]
        assert self.cli("activate", "--version", name) == 0
        self.mark()

    @rule(pick=st.integers(0, 10**6))
    def restore_to_a_position(self, pick: int) -> None:
        remaining = Journal(self.root, "c").read_new()
        first = min((c.position for c in remaining), default=self.end() + 1)
        activated = min((c.position for c in remaining if c.op == "activate"), default=self.end() + 1)
        kept = list_versions(self.root, "c")
        points = [
            h for h in self.history if h[1] in kept and h[0] >= activated and self.versions[h[1]].fold + 1 >= first
        ]
        if not points:
            return
        position, _, pending, docs_then = points[pick % len(points)]
        before = self.end()
        later = self.after(position)
        source = self.versions[points[pick % len(points)][1]]
        assert self.cli("restore", "--position", str(position)) == 0
        copies = self.learn_copies(before, pending)
        if copies:
            self.spans.append((copies[0].position, copies[-1].position))
        if later:
            self.spans.append((later[0].position, later[-1].position))
        self.adopt(Version(source.docs, copies[-1].position if copies else before, copies))
        assert apply(source.docs, copies).keys() == docs_then.keys()
        self.mark()

    @rule()
    def snapshot(self) -> None:
        path = self.tmp / f"snapshot-{len(self.snapshots)}.tar"
        assert self.cli("snapshot", "--out", str(path)) == 0
        self.snapshots.append((path, self.versions[self.active].docs, list(self.pending())))

    @precondition(lambda self: bool(self.snapshots))
    @rule(pick=st.integers(0, 10**6))
    def restore_a_snapshot(self, pick: int) -> None:
        path, docs, pending = self.snapshots[pick % len(self.snapshots)]
        active = self.versions[self.active]
        replaced = self.after(active.fold)
        before = self.end()
        assert self.cli("restore", "--snapshot", str(path)) == 0
        copies = self.learn_copies(before, pending)
        if copies:
            self.spans.append((copies[0].position, copies[-1].position))
        if replaced:
            self.spans.append((replaced[0].position, replaced[-1].position))
        self.adopt(Version(docs, copies[-1].position if copies else before, copies))
        self.mark()

    @rule()
    def reapply(self) -> None:
        carried = {r.position for r in self.versions[self.active].carried}
        todo = [
            r
            for r in self.records
            if in_spans(r.position, self.spans) and r.position not in self.reapplied and r.position not in carried
        ]
        before = self.end()
        assert self.cli("reapply") == 0
        self.reapplied |= {r.position for r in todo}
        self.learn_copies(before, todo)
        self.mark()

    @rule(keep=st.integers(1, 3))
    def gc(self, keep: int) -> None:
        published = set(list_versions(self.root, "c"))
        alive = [v for v in self.order if v in published]
        assert self.cli("gc", "--keep", str(keep)) == 0
        assert set(list_versions(self.root, "c")) == set(alive[-keep:]) | {self.active}

    # -- the checks ------------------------------------------------------------------------------

    @invariant()
    def answers_equal_the_model(self) -> None:
        if self.client is None:
            return
        self.sync()
        state = self.state()
        info = self.client.get("/v1/collections/c").json()
        assert info["count"] == len(state), (info, sorted(state))
        if not state:
            return
        ids = sorted(state)
        docs = np.stack([state[i][0] for i in ids])
        for metric in ("dot", "cosine"):
            query = self.queries[0]
            body = {
                "vector": query.tolist(),
                "k": len(ids),
                "metric": metric,
                "with_attributes": True,
                "params": {"exact": True},
            }
            hits = self.client.post("/v1/collections/c/search", json=body).json()["results"]
            assert sorted(h["id"] for h in hits) == ids
            expected = dict(zip(ids, true_scores(metric, query, docs), strict=True))
            for hit in hits:
                assert np.isclose(hit["score"], expected[hit["id"]], rtol=1e-4, atol=1e-4), (hit, expected[hit["id"]])
                assert hit["attributes"] == state[hit["id"]][1], (hit, state[hit["id"]])
        brand = {"must": [{"key": "brand", "match": "acme"}]}
        body = {"vector": self.queries[1].tolist(), "k": POOL, "filter": brand, "params": {"exact": True}}
        hits = self.client.post("/v1/collections/c/search", json=body).json()["results"]
        assert sorted(h["id"] for h in hits) == sorted(i for i in ids if state[i][1]["brand"] == "acme")
        scored = self.client.post("/v1/collections/c/score", json={"vector": self.queries[1].tolist(), "ids": ids})
        assert scored.status_code == 200 and [h["id"] for h in scored.json()["results"]] == ids
        gone = [i for i in IDS if i not in state][:2]
        for doc_id in gone:
            body = {"vector": self.queries[1].tolist(), "ids": [doc_id]}
            assert self.client.post("/v1/collections/c/score", json=body).status_code == 404


Lifecycle.TestCase.settings = settings(
    max_examples=int(os.environ.get("DOTCOS_MODEL_EXAMPLES", "25")),
    stateful_step_count=20,
    deadline=None,
    derandomize=os.environ.get("DOTCOS_MODEL_EXAMPLES") is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = Lifecycle.TestCase

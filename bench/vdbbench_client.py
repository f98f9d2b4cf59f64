"""dotcos as a VectorDBBench client, and VectorDBBench's own command line with it registered.

VectorDBBench (PyPI `vectordb-bench`) knows its clients by a closed enum, `DB`. `register()` adds
a `Dotcos` member and answers for it in the enum's three class lookups, so its runner, its
custom-dataset performance case and its result files treat dotcos like a bundled client. This
module runs inside VectorDBBench's own virtualenv (bench/.work/vdb-venv, made by
`bash bench/peers_setup.sh`); it needs nothing from dotcos's but the builder's command line
and a running `dotcos-serve` with an admin token.

dotcos builds offline and serves what it built, so the client loads the way a dotcos user does:
`insert_embeddings` stages each batch on disk, `optimize` (which VectorDBBench times as part of
the load) runs `dotcos-build build` over them into the service's index root and asks the service
to reload, and searches go over HTTP with a raw float32 body, each request in one write
(bench.onesend), as redis-py sends a command.
"""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Unpack
from urllib.parse import urlsplit

import click
import numpy as np
from pydantic import BaseModel, SecretStr
from vectordb_bench.backend.clients import DB
from vectordb_bench.backend.clients.api import DBCaseConfig, DBConfig, MetricType, VectorDB
from vectordb_bench.cli.cli import CommonTypedDict, HNSWFlavor2, click_parameter_decorators_from_typed_dict, run
from vectordb_bench.cli.vectordbbench import cli

from bench.onesend import OneSendConnection

log = logging.getLogger(__name__)
METRICS = {MetricType.IP: "dot", MetricType.COSINE: "cosine"}


class DotcosConfig(DBConfig):
    """Where the service listens, where it reads its collections, and how to build one."""

    url: str
    index_root: str
    admin_token: SecretStr
    dotcos_build: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "index_root": self.index_root,
            "admin_token": self.admin_token.get_secret_value(),
            "dotcos_build": self.dotcos_build,
        }


class DotcosHNSWConfig(BaseModel, DBCaseConfig):
    """The builder's HNSW flags and the efSearch of every search (None: the build's tuned default)."""

    metric_type: MetricType | None = None
    M: int = 32
    efConstruction: int = 128
    ef: int | None = None
    codes: str = "sq8"

    def metric(self) -> str:
        if self.metric_type not in METRICS:
            raise ValueError(f"dotcos ranks by dot (IP) or cosine, not {self.metric_type}")
        return METRICS[self.metric_type]

    def index_param(self) -> dict[str, Any]:
        return {"metric": self.metric(), "M": self.M, "efConstruction": self.efConstruction, "codes": self.codes}

    def search_param(self) -> dict[str, Any]:
        return {"metric": self.metric(), "ef_search": self.ef}


class Dotcos(VectorDB):
    """One dotcos collection, built from what VectorDBBench inserts and searched over HTTP."""

    def __init__(
        self,
        dim: int,
        db_config: dict[str, Any],
        db_case_config: DBCaseConfig | None,
        collection_name: str = "vdbbench",
        drop_old: bool = False,
        **kwargs: Any,
    ) -> None:
        assert isinstance(db_case_config, DotcosHNSWConfig)
        self.dim, self.config, self.case = dim, db_config, db_case_config
        self.name = "vdbbench"
        self.stage = Path(db_config["index_root"]).parent / f"{self.name}-stage"
        self.connection: http.client.HTTPConnection | None = None
        self.path = ""
        if drop_old:
            self.stage.mkdir(parents=True, exist_ok=True)
            for old in self.stage.glob("*"):
                old.unlink()

    @contextmanager
    def init(self) -> Generator[None, None, None]:
        parts = urlsplit(self.config["url"])
        self.connection = OneSendConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
        search = self.case.search_param()
        query = f"k={{k}}&metric={search['metric']}"
        if search["ef_search"] is not None:
            query += f"&ef_search={search['ef_search']}"
        self.path = f"/v1/collections/{self.name}/search?{query}"
        try:
            yield
        finally:
            self.connection.close()
            self.connection = None

    def insert_embeddings(
        self, embeddings: list[list[float]], metadata: list[int], **kwargs: Any
    ) -> tuple[int, Exception | None]:
        """Stage one batch (VectorDBBench may insert from several processes: one file per batch)."""
        vectors = np.asarray(embeddings, dtype=np.float32)
        np.savez(self.stage / f"{metadata[0]:012d}.npz", ids=np.asarray(metadata, np.int64), vectors=vectors)
        return len(metadata), None

    def optimize(self, data_size: int | None = None) -> None:
        """Build the staged documents into a new version and wait until the service answers from it."""
        batches = [np.load(path) for path in sorted(self.stage.glob("*.npz"))]
        ids = np.concatenate([batch["ids"] for batch in batches])
        vectors = np.concatenate([batch["vectors"] for batch in batches])
        np.save(self.stage / "docs.npy", vectors)
        (self.stage / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
        version = time.strftime("%Y%m%dT%H%M%S") + f"{time.time() % 1:.6f}"[2:] + "Z"
        index = self.case.index_param()
        argv = [self.config["dotcos_build"], "build", "--root", self.config["index_root"], "--name", self.name]
        argv += ["--input", str(self.stage / "docs.npy"), "--ids", str(self.stage / "ids.txt"), "--version", version]
        argv += ["--metrics", index["metric"], "--index", "hnsw", "--hnsw-m", str(index["M"])]
        argv += ["--ef-construction", str(index["efConstruction"]), "--hnsw-codes", index["codes"], "--quiet"]
        subprocess.run(argv, check=True)
        self._await_version(version)

    def _await_version(self, version: str) -> None:
        parts = urlsplit(self.config["url"])
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
        token = {"Authorization": f"Bearer {self.config['admin_token']}"}
        for _ in range(600):
            connection.request("POST", "/v1/admin/reload", b"", token)
            connection.getresponse().read()
            connection.request("GET", f"/v1/collections/{self.name}")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 and json.loads(body)["version"] == version:
                connection.close()
                return
            time.sleep(0.5)
        raise TimeoutError(f"the service did not serve version {version} of {self.name} within 300 s")

    def search_embedding(
        self, query: list[float], k: int = 100, filters: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[int]:
        assert self.connection is not None, "search outside init()"
        body = np.asarray(query, dtype="<f4").tobytes()
        self.connection.request("POST", self.path.format(k=k), body, {"Content-Type": "application/octet-stream"})
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"dotcos search: {response.status} {answer[:300]!r}")
        return [int(hit["id"]) for hit in json.loads(answer)["results"]]


def register() -> None:
    """Add `DB.Dotcos` and make the enum's class lookups answer for it."""
    if "Dotcos" in DB.__members__:
        return
    member = object.__new__(DB)
    member._name_, member._value_ = "Dotcos", "Dotcos"
    DB._member_map_["Dotcos"] = member
    DB._value2member_map_["Dotcos"] = member
    DB._member_names_.append("Dotcos")
    lookups = {"init_cls": Dotcos, "config_cls": DotcosConfig}
    for name, ours in lookups.items():
        theirs = getattr(DB, name).fget
        setattr(DB, name, property(lambda self, o=ours, t=theirs: o if self is member else t(self)))
    theirs_case = DB.case_config_cls
    DB.case_config_cls = lambda self, index_type=None: (  # type: ignore[method-assign]
        DotcosHNSWConfig if self is member else theirs_case(self, index_type)
    )


register()


class DotcosTypedDict(CommonTypedDict, HNSWFlavor2):
    url: Annotated[str, click.option("--url", default="http://127.0.0.1:8000", help="dotcos-serve's address")]
    index_root: Annotated[str, click.option("--index-root", required=True, help="the service's DOTCOS_INDEX_ROOT")]
    admin_token: Annotated[str, click.option("--admin-token", required=True, help="the service's DOTCOS_ADMIN_TOKEN")]
    dotcos_build: Annotated[str, click.option("--dotcos-build", default="dotcos-build", help="the builder's command")]
    hnsw_codes: Annotated[str, click.option("--hnsw-codes", default="sq8", help="float32, sq8 or fp16")]


@cli.command(name="dotcos")
@click_parameter_decorators_from_typed_dict(DotcosTypedDict)
def dotcos_command(**parameters: Unpack[DotcosTypedDict]) -> None:
    """dotcos-serve, HNSW built by dotcos-build (efSearch: --ef-runtime, else the build's tuned one)."""
    run(
        db=DB["Dotcos"],
        db_config=DotcosConfig(
            db_label=parameters["db_label"],
            url=parameters["url"],
            index_root=parameters["index_root"],
            admin_token=SecretStr(parameters["admin_token"]),
            dotcos_build=parameters["dotcos_build"],
        ),
        db_case_config=DotcosHNSWConfig(
            M=parameters["m"],
            efConstruction=parameters["ef_construction"],
            ef=parameters["ef_runtime"],
            codes=parameters["hnsw_codes"],
        ),
        **parameters,
    )


if __name__ == "__main__":
    cli()

"""Schemathesis fuzzes every route of the published OpenAPI document against a real server.

The schema is the app's own OpenAPI document (admin routes included); calls go to a real
`dotcos-serve` process. Bounded here (DOTCOS_FUZZ_EXAMPLES per route, default 25) so CI stays
fast; `make fuzz` runs many more. Checks: no 5xx, responses (errors included) conform to the
documented schemas and status codes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import positive_data_acceptance

from service.api.app import create_app
from service.settings import ServiceSettings
from tests.conftest import Server, build, make_corpus, start_server, stop_server

EXAMPLES = int(os.environ.get("DOTCOS_FUZZ_EXAMPLES", "25"))
TOKEN = "fuzz-token"
SCHEMA = schemathesis.openapi.from_dict(create_app(ServiceSettings(admin_token=SecretStr(TOKEN))).openapi())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    corpus = make_corpus(tmp / "data", n=300, dim=4)
    assert build(tmp / "root", corpus, "c", "--index", "hnsw") == 0
    running = start_server(
        tmp / "root", tmp / "server.log", DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_MAX_K="50", DOTCOS_MAX_BATCH="8"
    )
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, server: Server) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.path.startswith("/v1/admin") else None
    # Schema-valid bodies can still be wrong for this collection (dimension, k limit, unknown id):
    # those are documented 400/404 answers, so "valid data must be accepted" does not apply.
    case.call_and_validate(base_url=server.url, headers=headers, excluded_checks=[positive_data_acceptance])

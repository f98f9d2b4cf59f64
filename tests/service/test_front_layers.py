"""dotcos's ASGI layers in front of FastAPI and the one body parser: its plain lane, CORS, errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api import handlers
from service.api.app import create_app
from service.api.handlers import model_search, plain_search
from service.settings import ServiceSettings
from tests.conftest import Corpus, build

numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-(2**62), 2**62))
knobs = st.fixed_dictionaries({}, optional={"ef_search": st.integers(1, 10**6), "nprobe": st.integers(1, 10**6)})
plain_fields = st.fixed_dictionaries(
    {}, optional={"k": st.integers(1, 10**6), "metric": st.text(max_size=8), "params": knobs}
)


@settings(max_examples=200, deadline=None)
@given(
    vectors=st.integers(1, 6).flatmap(
        lambda d: st.lists(st.lists(numbers, min_size=d, max_size=d), min_size=1, max_size=3)
    ),
    fields=plain_fields,
    batch=st.booleans(),
)
def test_plain_bodies_parse_like_the_model(vectors: list[list[float]], fields: dict[str, object], batch: bool) -> None:
    """Same matrix, options and errors as validating the body with the pydantic model."""
    doc = {"vectors": vectors, **fields} if batch else {"vector": vectors[0], **fields}
    body = json.dumps(doc).encode()
    expected: object
    try:
        vectors_in, options, _ = model_search(body, batch)
        expected = (vectors_in.tolist(), options)
    except Exception as exc:  # noqa: BLE001 - the same error type and text is what is compared
        expected = (type(exc), str(exc))
    try:
        parsed = plain_search(body, batch)
        assert parsed is not None
        got: object = (parsed[0].tolist(), parsed[1])
    except Exception as exc:  # noqa: BLE001
        got = (type(exc), str(exc))
    assert got == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"vector": [true, false]}',
        b'{"vector": ["1.5", 2]}',
        b'{"vector": [1, null]}',
        b'{"vector": []}',
        b'{"vector": [[1, 2]]}',
        b'{"vector": [1, 2], "k": true}',
        b'{"vector": [1, 2], "k": 2.0}',
        b'{"vector": [1, 2], "k": 0}',
        b'{"vector": [1, 2], "metric": 3}',
        b'{"vector": [1, 2], "exclude": ["a"]}',
        b'{"vector": [1, 2], "params": {"exact": true}}',
        b'{"vector": [1, 2], "params": {"ef_search": 0}}',
        b'{"vector": [1, 2], "params": {"ef_search": 2.0}}',
        b'{"vector": [1, 2], "params": {"nprobe": true}}',
        b'{"vector": [1, 2], "params": {"efSearch": 8}}',
        b'{"vector": [1, 2], "params": [8]}',
        b'{"vector": [1e400]}',
        b'{"vector": [NaN]}',
        b"[1, 2]",
        b'{"vector": [1, 2',
        b'{"vectors": [[1, 2]]}',
    ],
)
def test_anything_else_is_left_to_the_model(body: bytes) -> None:
    assert plain_search(body, batch=False) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"vectors": [[1, 2], [3]]}',
        b'{"vectors": [1, 2]}',
        b'{"vectors": [[]]}',
        b'{"vectors": []}',
        b'{"vector": [1, 2]}',
    ],
)
def test_irregular_batches_are_left_to_the_model(body: bytes) -> None:
    assert plain_search(body, batch=True) is None


def test_cors_headers_on_the_front_and_preflight(corpus: Corpus, tmp_path, serve) -> None:
    assert build(tmp_path, corpus, "c") == 0
    origin = "http://app.example"
    server = serve(tmp_path, DOTCOS_CORS_ORIGINS=json.dumps([origin]))
    with server.client() as client:
        search = client.post(
            "/v1/collections/c/search", json={"vector": corpus.queries[0].tolist()}, headers={"Origin": origin}
        )
        assert search.status_code == 200
        assert search.headers["access-control-allow-origin"] == origin
        preflight = client.options(
            "/v1/collections/c/search",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Content-Type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = client.post(
            "/v1/collections/c/search",
            json={"vector": corpus.queries[0].tolist()},
            headers={"Origin": "http://elsewhere.example"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_a_bug_behind_the_front_is_a_json_500_and_counted(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(handlers, "parse_search", broken)

    async def send() -> tuple[httpx.Response, str]:
        transport = httpx.ASGITransport(app=create_app(ServiceSettings(index_root=tmp_path)))
        async with httpx.AsyncClient(transport=transport, base_url="http://dotcos") as client:
            response = await client.post("/v1/collections/c/search", json={"vector": [1.0, 2.0]})
            return response, (await client.get("/metrics")).text

    response, metrics = asyncio.run(send())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "boom" not in response.text
    assert 'route="/v1/collections/{name}/search",status="500"' in metrics.replace('metric="",', "")


def test_plain_search_float32_range_is_checked() -> None:
    body = json.dumps({"vectors": [[1.0, 2.0], [1e39, 0.0]]}).encode()
    with pytest.raises(Exception, match=r"vectors\[1\]: the value at position 0 is outside the float32 range"):
        plain_search(body, batch=True)
    parsed = plain_search(json.dumps({"vector": [1, 2.5]}).encode(), batch=False)
    assert parsed is not None and parsed[0].dtype == np.float32 and parsed[0].shape == (1, 2)

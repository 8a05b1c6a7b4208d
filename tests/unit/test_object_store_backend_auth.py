"""Signed requests between the Object Storage hosts (backend_auth) and the ring files
they hand each other (ring/distribution)."""

from __future__ import annotations

import asyncio
import json
import stat
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cumulo.object_store.ring import distribution
from cumulo.object_store.storage import backend_auth

KEY = b"k" * 64


def test_the_proxy_host_makes_its_key_once_readable_only_by_its_owner(tmp_path):
    key = backend_auth.ensure_key(tmp_path)
    path = backend_auth.key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and backend_auth.ensure_key(tmp_path) == key


def test_a_storage_host_without_the_key_is_told_where_it_comes_from(tmp_path):
    with pytest.raises(backend_auth.BackendKeyError, match="copy the proxy host's"):
        backend_auth.load_key(backend_auth.key_path(tmp_path))
    path = backend_auth.key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("short\n")
    with pytest.raises(backend_auth.BackendKeyError, match="too short"):
        backend_auth.load_key(path)


def test_only_a_fresh_signature_of_this_method_and_path_passes():
    headers = backend_auth.signed_headers(KEY, "GET", "/device/d1")
    assert backend_auth.refusal(KEY, "GET", "/device/d1", headers) is None
    assert backend_auth.refusal(KEY, "PUT", "/device/d1", headers)[0] == 403
    assert backend_auth.refusal(KEY, "GET", "/device/d2", headers)[0] == 403
    assert backend_auth.refusal(b"x" * 64, "GET", "/device/d1", headers)[0] == 403
    assert backend_auth.refusal(KEY, "GET", "/device/d1", {})[0] == 401
    old = f"{time.time() - backend_auth.MAX_SKEW - 5:.6f}"
    stale = {
        backend_auth.TIMESTAMP_HEADER: old,
        backend_auth.SIGNATURE_HEADER: backend_auth.signature(KEY, "GET", "/device/d1", old),
    }
    status, reason = backend_auth.refusal(KEY, "GET", "/device/d1", stale)
    assert status == 403 and "clock" in reason
    bad_time = {**headers, backend_auth.TIMESTAMP_HEADER: "soon"}
    assert backend_auth.refusal(KEY, "GET", "/device/d1", bad_time) == (
        403,
        "malformed backend timestamp",
    )


def test_the_object_server_middleware_refuses_what_the_client_did_not_sign(caplog):
    async def hello(request):
        return PlainTextResponse(f"hello {request.query_params.get('x', '')}")

    app = Starlette(routes=[Route("/hello/{name}", hello, methods=["GET", "POST"])])
    guarded = backend_auth.RequireBackendSignature(app, KEY)

    async def scenario() -> None:
        transport = httpx.ASGITransport(guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            assert (await client.get("/hello/a")).status_code == 401
            signed = await client.get("/hello/a%20b?x=1", auth=backend_auth.BackendAuth(KEY))
            assert signed.status_code == 200 and signed.text == "hello 1"
            wrong = await client.post("/hello/a", auth=backend_auth.BackendAuth(b"y" * 64))
            assert wrong.status_code == 403 and wrong.text == "wrong backend signature"
            # A signature covers the query too: another query is refused.
            headers = backend_auth.signed_headers(KEY, "GET", "/hello/a?x=1")
            assert (await client.get("/hello/a?x=2", headers=headers)).status_code == 403

    asyncio.run(scenario())
    assert "refused POST /hello/a from 127.0.0.1: wrong backend signature" in caplog.text


def test_ring_files_are_served_by_name_only(tmp_path):
    ring = {"part_power": 1, "replicas": 1, "devs": [], "replica2part2dev": [[0, 0]]}
    (tmp_path / "object.ring.json").write_text(json.dumps(ring))
    text, etag = distribution.read_ring(tmp_path, "object")
    assert json.loads(text) == ring and etag == distribution.ring_etag(text)
    (tmp_path / "secret.json").write_text("{}")
    for name in ("../secret", "object.ring", "", "Object"):
        with pytest.raises(distribution.RingUnavailable):
            distribution.read_ring(tmp_path, name)
    with pytest.raises(distribution.RingUnavailable):
        distribution.read_ring(None, "object")


def test_what_is_not_a_ring_is_not_installed():
    for text in (b"[]", b"{}", b"not json", b'{"part_power": 1, "replicas": 1, "devs": [], '
                 b'"replica2part2dev": [[0]]}'):  # fmt: skip
        with pytest.raises((ValueError, TypeError)):
            distribution.check_ring(text)

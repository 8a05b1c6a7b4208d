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

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import CONFIG_FILE, CumuloConfig, load_config, write_config
from cumulo.object_store.ring import distribution
from cumulo.object_store.storage import backend_auth

KEY = b"k" * 64
NEW, OLD = "n" * 64, "o" * 64


def test_init_writes_the_backend_secret_into_the_config_once(tmp_path):
    config = prepare_state_dir(tmp_path)
    secret = config.object_store.backend_secret
    assert isinstance(secret, str) and len(bytes.fromhex(secret)) == 32
    assert stat.S_IMODE((tmp_path / CONFIG_FILE).stat().st_mode) == 0o600
    assert load_config(tmp_path).object_store.backend_secret == secret
    assert prepare_state_dir(tmp_path).object_store.backend_secret == secret
    assert not backend_auth.key_path(tmp_path).exists()  # no second place for it
    keys = backend_auth.BackendKeys.load(secret, tmp_path)
    assert keys.accepted == (secret.encode(),)


def test_a_state_dir_made_before_keeps_its_key_file(tmp_path):
    """A proxy host's key file (its storage hosts hold copies) becomes the config's
    secret; a storage host whose cumulo.toml has none still reads its copy."""
    proxy, storage = tmp_path / "proxy", tmp_path / "storage"
    for state in (proxy, storage):
        backend_auth.key_path(state).parent.mkdir(parents=True)
        backend_auth.key_path(state).write_text(OLD + "\n")
    assert prepare_state_dir(proxy).object_store.backend_secret == OLD
    keys = backend_auth.BackendKeys.load("", storage)
    assert keys.signing == OLD.encode()
    headers = backend_auth.signed_headers(keys.signing, "GET", "/device/d1")
    assert backend_auth.refusal([OLD.encode()], "GET", "/device/d1", headers) is None


def test_a_storage_host_without_the_key_is_told_where_it_comes_from(tmp_path):
    with pytest.raises(backend_auth.BackendKeyError, match="no backend key: set "
                       r"\[object_store\] backend_secret .* or copy"):  # fmt: skip
        backend_auth.BackendKeys.load("", tmp_path)
    with pytest.raises(backend_auth.BackendKeyError, match="too short"):
        backend_auth.BackendKeys.load("short", tmp_path)
    with pytest.raises(backend_auth.BackendKeyError, match="too short"):
        backend_auth.BackendKeys.load([NEW, "short"], tmp_path)
    with pytest.raises(backend_auth.BackendKeyError, match="no backend key"):
        backend_auth.BackendKeys.load([], tmp_path)
    path = backend_auth.key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("short\n")
    with pytest.raises(backend_auth.BackendKeyError, match="too short"):
        backend_auth.BackendKeys.load("", tmp_path)


def _write_secret(state, secret) -> None:
    config = CumuloConfig()
    config.object_store.backend_secret = secret
    write_config(state, config)


def _passes(keys, signing_key: str) -> bool:
    headers = backend_auth.signed_headers(signing_key.encode(), "PUT", "/object/d1/3/0/abc")
    return backend_auth.refusal(keys.accepted, "PUT", "/object/d1/3/0/abc", headers) is None


def test_a_rotation_signs_with_the_first_key_and_accepts_the_others_until_removed(
    tmp_path, monkeypatch
):
    """The three steps of docs/object-store.md, as one host lives them: each edit of
    cumulo.toml is picked up without a restart."""
    monkeypatch.setattr(backend_auth, "RELOAD_INTERVAL", 0.0)
    _write_secret(tmp_path, OLD)
    keys = backend_auth.BackendKeys.load(load_config(tmp_path).object_store.backend_secret,
                                         tmp_path)  # fmt: skip
    auth = backend_auth.BackendAuth(keys)
    assert _passes(keys, OLD) and not _passes(keys, NEW)

    def signer() -> bytes:
        request = httpx.Request("GET", "http://node/device/d1")
        signed = next(auth.auth_flow(request))
        for key in (OLD, NEW):
            expected = backend_auth.signature(
                key.encode(), "GET", "/device/d1", signed.headers[backend_auth.TIMESTAMP_HEADER]
            )
            if signed.headers[backend_auth.SIGNATURE_HEADER] == expected:  # fmt: skip
                return key
        raise AssertionError("signed with neither key")

    # 1. Every host accepts the new key; the old one still signs.
    _write_secret(tmp_path, [OLD, NEW])
    assert _passes(keys, OLD) and _passes(keys, NEW) and signer() == OLD
    # 2. Every host signs with the new key; the old one still verifies (hosts not
    # switched yet).
    _write_secret(tmp_path, [NEW, OLD])
    assert _passes(keys, OLD) and _passes(keys, NEW) and signer() == NEW
    # A config that does not parse (an edit half written) changes nothing.
    (tmp_path / CONFIG_FILE).write_text("[object_store\nbackend_secret = ")
    assert _passes(keys, OLD) and signer() == NEW
    # 3. The old key is removed: refused from then on.
    _write_secret(tmp_path, NEW)
    assert _passes(keys, NEW) and not _passes(keys, OLD) and signer() == NEW


def test_keys_are_read_again_at_most_once_a_second(tmp_path):
    _write_secret(tmp_path, OLD)
    keys = backend_auth.BackendKeys.load(OLD, tmp_path)
    _write_secret(tmp_path, NEW)
    assert keys.signing == OLD.encode()  # not looked at yet
    time.sleep(backend_auth.RELOAD_INTERVAL + 0.05)
    assert keys.accepted == (NEW.encode(),)


def test_only_a_fresh_signature_of_this_method_and_path_passes():
    headers = backend_auth.signed_headers(KEY, "GET", "/device/d1")
    assert backend_auth.refusal([KEY], "GET", "/device/d1", headers) is None
    assert backend_auth.refusal([KEY], "PUT", "/device/d1", headers)[0] == 403
    assert backend_auth.refusal([KEY], "GET", "/device/d2", headers)[0] == 403
    assert backend_auth.refusal([b"x" * 64], "GET", "/device/d1", headers)[0] == 403
    assert backend_auth.refusal([b"x" * 64, KEY], "GET", "/device/d1", headers) is None
    assert backend_auth.refusal([KEY], "GET", "/device/d1", {})[0] == 401
    old = f"{time.time() - backend_auth.MAX_SKEW - 5:.6f}"
    stale = {
        backend_auth.TIMESTAMP_HEADER: old,
        backend_auth.SIGNATURE_HEADER: backend_auth.signature(KEY, "GET", "/device/d1", old),
    }
    status, reason = backend_auth.refusal([KEY], "GET", "/device/d1", stale)
    assert status == 403 and "clock" in reason
    bad_time = {**headers, backend_auth.TIMESTAMP_HEADER: "soon"}
    assert backend_auth.refusal([KEY], "GET", "/device/d1", bad_time) == (
        403,
        "malformed backend timestamp",
    )


def test_the_object_server_middleware_refuses_what_the_client_did_not_sign(caplog):
    async def hello(request):
        return PlainTextResponse(f"hello {request.query_params.get('x', '')}")

    app = Starlette(routes=[Route("/hello/{name}", hello, methods=["GET", "POST"])])
    guarded = backend_auth.RequireBackendSignature(app, backend_auth.BackendKeys([KEY]))

    async def scenario() -> None:
        transport = httpx.ASGITransport(guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            assert (await client.get("/hello/a")).status_code == 401
            signed = await client.get(
                "/hello/a%20b?x=1", auth=backend_auth.BackendAuth(backend_auth.BackendKeys([KEY]))
            )
            assert signed.status_code == 200 and signed.text == "hello 1"
            wrong = await client.post(
                "/hello/a", auth=backend_auth.BackendAuth(backend_auth.BackendKeys([b"y" * 64]))
            )
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

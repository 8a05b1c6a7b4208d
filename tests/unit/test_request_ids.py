"""Request ids as oslo.context and oslo.middleware have them: the caller's
`X-OpenStack-Request-ID` becomes the global request id only when it is `req-` and a
UUID, every log line names both ids, and a call to another service sends the global one."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from cumulo.common import request_ids
from cumulo.common.app import JSONResponse, create_app
from cumulo.common.faults import render_compute
from cumulo.common.logs import TEXT_FORMAT, RequestIdFilter
from cumulo.common.request_ids import valid_global_request_id, working_for
from cumulo.common.service_client import ServiceClient

GLOBAL = "req-8c2ea1e4-7a5b-4c43-9d0e-3f1b5a6c7d8e"


@pytest.mark.parametrize(
    "value",
    # Fixed values: xdist workers must collect the same test ids.
    [
        GLOBAL,
        "req-3f0c6a51-27d4-4e1b-9a8e-5b7d2c91e0aa",
        "req-00000000-0000-0000-0000-000000000000",
    ],
)
def test_a_req_prefixed_lowercase_uuid_is_a_global_request_id(value: str):
    assert valid_global_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        GLOBAL.upper(),  # oslo.middleware's format is lowercase hex only
        GLOBAL.replace("req-", "REQ-"),
        GLOBAL[4:],  # a bare UUID
        f"{GLOBAL}\n",  # nothing after it, not even a newline
        f" {GLOBAL}",
        f"{GLOBAL}-x",
        "req-8c2ea1e47a5b4c439d0e3f1b5a6c7d8e",  # a UUID without its dashes
        "req-8c2ea1e4-7a5b-4c43-9d0e-3f1b5a6c7d8g",
        "req-<script>",
        12345,
    ],
)
def test_anything_else_is_ignored(value: object):
    assert valid_global_request_id(value) is None


def _format(message: str) -> str:
    record = logging.LogRecord("cumulo.test", logging.INFO, __file__, 1, message, (), None)
    RequestIdFilter().filter(record)
    return logging.Formatter(TEXT_FORMAT).format(record)


def test_log_lines_name_the_local_and_the_global_request_id():
    with working_for("req-local", GLOBAL):
        assert f"[req-local global-{GLOBAL}] hello" in _format("hello")
    with working_for("req-local", None):
        assert "[req-local] hello" in _format("hello")
    with working_for("req-local", "not-a-request-id"):
        assert "[req-local] hello" in _format("hello")
    assert "[-] outside" in _format("outside")


async def _seen(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "request_id": request_ids.request_id_var.get(),
            "global_request_id": request_ids.global_request_id_var.get(),
        }
    )


@pytest.fixture
async def api():
    app = create_app("compute", [Route("/seen", _seen)], render_compute)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://compute.internal"
    ) as client:
        yield client


async def test_an_api_takes_a_valid_global_request_id_from_its_caller(api: httpx.AsyncClient):
    answer = await api.get("/seen", headers={"X-OpenStack-Request-ID": GLOBAL})
    # The request keeps its own id (the answer's x-openstack-request-id) beside it.
    assert answer.json() == {
        "request_id": answer.headers["x-openstack-request-id"],
        "global_request_id": GLOBAL,
    }
    assert answer.headers["x-openstack-request-id"] != GLOBAL


@pytest.mark.parametrize("sent", [None, "req-1", GLOBAL.upper(), "x" * 300])
async def test_an_api_ignores_an_invalid_or_missing_global_request_id(
    api: httpx.AsyncClient, sent: str | None
):
    headers = {"X-OpenStack-Request-ID": sent} if sent else {}
    answer = await api.get("/seen", headers=headers)
    assert answer.json()["global_request_id"] is None
    assert request_ids.global_request_id_var.get() is None  # nothing leaks out


async def test_calls_to_another_service_send_the_global_request_id():
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"sent": request.headers.get("x-openstack-request-id")})

    client = ServiceClient(
        "network", app=create_app("network", [Route("/echo", echo)], render_compute)
    )
    try:
        with working_for("req-local", GLOBAL):
            assert (await client.json("GET", "/echo", "token"))["sent"] == GLOBAL
        # Without a global id the request's own id is sent (oslo.context's global_id).
        with working_for("req-11111111-2222-4333-8444-555555555555", None):
            sent = (await client.json("GET", "/echo", "token"))["sent"]
            assert sent == "req-11111111-2222-4333-8444-555555555555"
        # Outside any request nothing is sent.
        assert (await client.json("GET", "/echo", "token"))["sent"] is None
    finally:
        await client.close()


def test_bus_messages_carry_the_ids_of_the_request_they_are_sent_for():
    from cumulo.common.rpc.base import envelope

    with working_for("req-local", GLOBAL):
        message = envelope("sync", {}, {})
        assert message["context"] == {"request_id": "req-local", "global_request_id": GLOBAL}
        # A context that names its request keeps it.
        own = envelope("sync", {}, {"request_id": "req-other"})
        assert own["context"] == {"request_id": "req-other", "global_request_id": GLOBAL}
    assert envelope("sync", {}, {})["context"] == {}

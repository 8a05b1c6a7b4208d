"""When a session's token is renewed from its trust, and what turns silent renewal off."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.config import CumuloConfig
from cumulo.dashboard.renewal import MIN_GAIN, RENEW_BEFORE, Trustee, renewal_due
from cumulo.dashboard.sessions import Session
from cumulo.dashboard.web import announce_renewal

NOW = 1_800_000_000.0


def session(left: float, lifetime: float = 3600, trust_left: float = 12 * 3600) -> Session:
    return Session(
        token="t",
        user_id="u",
        user_name="n",
        domain_name="Default",
        project_id="p",
        project_name="demo",
        roles=["member"],
        expires_at=NOW + left,
        trust_id="trust" if trust_left else "",
        trust_expires=NOW + trust_left,
        token_lifetime=lifetime,
    )


def test_a_token_is_renewed_near_its_end_while_it_is_valid():
    assert not renewal_due(session(RENEW_BEFORE + 1), NOW)
    assert renewal_due(session(RENEW_BEFORE - 1), NOW)
    assert not renewal_due(session(0), NOW)  # expired: the user was away, the password asks
    assert not renewal_due(session(-5), NOW)


def test_a_short_token_is_renewed_past_half_its_life():
    assert not renewal_due(session(31, lifetime=60), NOW)
    assert renewal_due(session(29, lifetime=60), NOW)


def test_no_trust_or_a_trust_ending_first_is_not_renewed_silently():
    assert not renewal_due(session(60, trust_left=0), NOW)
    assert not renewal_due(session(60, trust_left=60 + MIN_GAIN - 1), NOW)
    assert renewal_due(session(60, trust_left=60 + MIN_GAIN), NOW)


def test_silent_renewal_is_off_without_a_password_or_with_no_lifetime():
    config = CumuloConfig()
    assert Trustee.from_config(config) is None
    config.dashboard.service_password = "secret"
    trustee = Trustee.from_config(config)
    assert trustee is not None and trustee.name == "dashboard"
    assert trustee.max_lifetime == 12 * 3600
    auth = trustee.identity({"OS-TRUST:trust": {"id": "x"}})
    assert auth["scope"] == {"OS-TRUST:trust": {"id": "x"}}
    assert auth["identity"]["password"]["user"]["password"] == "secret"
    config.dashboard.session_max_lifetime = 0
    assert Trustee.from_config(config) is None


def htmx_request() -> Request:
    return Request({"type": "http", "method": "GET", "headers": [(b"hx-request", b"true")]})


def test_an_htmx_part_that_renewed_tells_the_page_beside_its_own_events():
    renewed = session(3000)
    response = Response(headers={"HX-Trigger": "server-deleted, refresh"})
    announce_renewal(htmx_request(), response, renewed)
    events = orjson.loads(response.headers["hx-trigger"])
    assert set(events) == {"server-deleted", "refresh", "session-renewed"}
    assert events["session-renewed"]["expires_at"] == renewed.expires_at
    response = Response(headers={"HX-Trigger": '{"shown": {"id": 1}}'})
    announce_renewal(htmx_request(), response, renewed)
    assert orjson.loads(response.headers["hx-trigger"])["shown"] == {"id": 1}
    plain = Response()
    announce_renewal(Request({"type": "http", "method": "GET", "headers": []}), plain, renewed)
    assert "hx-trigger" not in plain.headers

"""What the API fuzzers (S3, EC2) share: a client that sends a request byte for byte, and
the Hypothesis loop that draws requests, signs them, sends them and judges each answer."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _wire(value: str) -> bytes:
    """A header value as http.client (under botocore) puts it on the wire: ISO-8859-1."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


class RawClient:
    """HTTP/1.1 as sent, byte for byte: httpx would normalize a path's dot segments
    (a key named `.`) and the signature would then be of another request."""

    def __init__(self, endpoint: str) -> None:
        self.netloc = endpoint.split("://", 1)[1]
        self.conn = http.client.HTTPConnection(self.netloc, timeout=30)

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        target = url.split(self.netloc, 1)[1]
        raw = {k: _wire(v) for k, v in headers.items()}
        try:
            self.conn.request(method, target, body=body, headers=raw)
            response = self.conn.getresponse()
            content = response.read()
        except (TimeoutError, http.client.HTTPException, OSError):
            self.conn.close()
            raise
        if response.will_close:
            self.conn.close()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)


def fuzz(
    client: RawClient,
    draw: Callable[[], Any],
    sign: Callable[[dict], tuple[str, dict[str, str], bytes]],
    judge: Callable[[dict, Answer], None],
    *,
    seed_value: int,
    examples: int,
) -> dict[int, int]:
    """`examples` requests from the strategy `draw()` makes, each signed by `sign`, sent as
    it is and its answer judged; a failure names the request and the answer. Returns how
    many answers came with each status."""
    seen: dict[int, int] = {}

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(st.data())
    def one(data) -> None:
        r = data.draw(draw())
        url, headers, body = sign(r)
        method = r.get("method", "POST")
        try:
            answer = client.request(method, url, headers, body)
        except TimeoutError:
            pytest.fail(f"no answer within 30 s: {method} {url[:300]}")
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        try:
            judge(r, answer)
        except (AssertionError, ElementTree.ParseError) as exc:
            raise AssertionError(
                f"{exc}\n{method} {url[:2000]}\nheaders: {headers}\nbody: {body[:2000]!r}\n"
                f"answer {answer.status_code}: {answer.text[:1500]}"
            ) from None

    one()
    return seen

"""An S3 request taken apart: bucket and key (path or virtual-host style), the query's
subresources, and the headers, as the signature and the handlers need them."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from starlette.types import Scope

from cumulo.object_store.s3.errors import S3Error


@dataclass
class S3Request:
    method: str
    raw_path: str  # as sent (percent-encoded): what SigV4 and SigV2 sign
    bucket: str
    key: str
    query: list[tuple[str, str]]  # decoded, in order
    headers: dict[str, str]  # lower-case names; repeated fields joined with ","
    host: str
    virtual_host: bool = False
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = {k: v for k, v in self.query}

    @property
    def resource(self) -> str:
        return (
            f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}" if self.bucket else "/"
        )


def split_query(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def parse(scope: Scope, s3_domain: str) -> S3Request:
    raw_headers = scope["headers"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
    if len(headers) != len(raw_headers):  # a repeated field: its values joined in order
        headers = {}
        for k, v in raw_headers:
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    raw_path = raw_path.split("?", 1)[0]
    host = headers.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    path = unquote(raw_path)
    virtual = bool(s3_domain) and hostname.endswith("." + s3_domain)
    if virtual:
        bucket, key = hostname[: -len(s3_domain) - 1], path.lstrip("/")
    else:
        bucket, _, key = path.lstrip("/").partition("/")
    return S3Request(
        method=scope["method"],
        raw_path=raw_path or "/",
        bucket=bucket,
        key=key,
        query=split_query(scope.get("query_string", b"").decode("latin-1")),
        headers=headers,
        host=host,
        virtual_host=virtual,
    )


def int_param(value: str | None, default: int, name: str) -> int:
    """A whole-number query parameter (max-keys and the like), S3's error when not one."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range")
    return number

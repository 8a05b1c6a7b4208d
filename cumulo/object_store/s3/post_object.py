"""POST Object: a browser uploads a file into a bucket with an HTML form (S3's
"Browser-Based Uploads Using POST"). The form's fields come before its `file`; the
`policy` (base64 JSON: `expiration` and `conditions`) is signed with SigV4
(`x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `x-amz-signature`) or SigV2
(`AWSAccessKeyId`, `signature`); every other field must be allowed by a condition
(`{"field": value}`, `["eq", "$field", value]`, `["starts-with", "$field", prefix]`), and
`["content-length-range", min, max]` bounds the file. `${filename}` in the key is the
uploaded file's name. The file is read as it comes and stored as a PutObject would store
it; the answer follows `success_action_redirect` (303) or `success_action_status`
(200, 201 with a PostResponse document, 204 by default)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Message, Receive

from cumulo.object_store.s3 import acl, configs
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.gateway import Call
from cumulo.object_store.s3.signature import V4
from cumulo.object_store.s3.xmldoc import document, element, sub

MAX_FIELDS_BYTES = 64 * 1024  # the fields before the file, policy included
MAX_DRAIN_BYTES = 64 * 1024  # what is read (and ignored) after the file
# Fields no condition has to allow (S3's list), and those whose names start so.
UNCHECKED = {"x-amz-signature", "signature", "awsaccesskeyid", "file", "policy"}
UNCHECKED_PREFIX = "x-ignore-"
STATUSES = {"200": 200, "201": 201, "204": 204}


def is_post_object(call: Call) -> bool:
    req = call.req
    return (
        req.method == "POST"
        and not req.key
        and not req.params
        and req.headers.get("content-type", "").lower().startswith("multipart/form-data")
    )


# -- the form, read as it comes -------------------------------------------------------------


class FormReader:
    """multipart/form-data from the client's body, part by part (python-multipart's
    parser fed as the body arrives): ("part", name, filename, headers), ("data", bytes),
    ("end",) for each part, then None."""

    def __init__(self, receive: Receive, boundary: bytes) -> None:
        self._receive = receive
        self._events: deque[tuple[Any, ...]] = deque()
        self._done = False
        self._header: list[bytes] = [b"", b""]
        self._headers: dict[str, str] = {}
        callbacks = {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add_header(0, d[s:e]),
            "on_header_value": lambda d, s, e: self._add_header(1, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end",)),
        }
        self._parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def _begin(self) -> None:
        self._headers = {}

    def _add_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _header_end(self) -> None:
        name, value = self._header
        # As bytes (latin-1): a browser writes a file name in UTF-8, decoded once parsed.
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._events.append(
            ("part", name, None if filename is None else filename.decode("utf-8", "replace"),
             self._headers)
        )  # fmt: skip

    async def event(self) -> tuple[Any, ...] | None:
        while not self._events:
            if self._done:
                return None
            message = await self._receive()
            if message["type"] != "http.request":
                raise S3Error("IncompleteBody")
            try:
                if message.get("body"):
                    self._parser.write(message["body"])
                if not message.get("more_body", False):
                    self._parser.finalize()
                    self._done = True
            except MultipartParseError:
                raise S3Error("MalformedPOSTRequest") from None
        return self._events.popleft()


async def read_fields(form: FormReader) -> tuple[dict[str, str], str]:
    """The fields before the file (names lower-cased), and the name of the file sent
    (its last path segment: some browsers send a whole path)."""
    fields: dict[str, str] = {}
    size = 0
    while True:
        event = await form.event()
        if event is None:
            raise S3Error("InvalidArgument", "POST requires exactly one file upload per request.",
                          ArgumentName="file", ArgumentValue="0")  # fmt: skip
        _, name, filename, _ = event
        if name.lower() == "file":
            return fields, re.split(r"[\\/]", filename or "")[-1]
        size += len(name)
        value = b""
        while (event := await form.event()) is not None and event[0] == "data":
            value += event[1]
            size += len(event[1])
            if size > MAX_FIELDS_BYTES:
                raise S3Error("MaxPostPreDataLengthExceeded")
        fields[name.lower()] = value.decode("utf-8", "replace")


# -- the policy ------------------------------------------------------------------------------


def _required(fields: dict[str, str], name: str) -> str:
    if not fields.get(name):
        raise S3Error(
            "InvalidArgument",
            f"Bucket POST must contain a field named '{name}'.  If it is specified, please "
            "check the order of the fields.",
            ArgumentName=name, ArgumentValue="",
        )  # fmt: skip
    return fields[name]


def _policy_error(message: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {message}")


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}")


def decode_policy(encoded: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise _policy_error("Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise _policy_error("Invalid JSON.")
    if "expiration" not in policy:
        raise _policy_error("Policy missing expiration.")
    if not isinstance(policy.get("conditions"), list):
        raise _policy_error("Policy missing conditions.")
    try:
        expires = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
    except ValueError:
        raise _policy_error("Invalid 'expiration' value: " + str(policy["expiration"])) from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        raise _denied("Policy expired.")
    return policy


def check_conditions(
    policy: dict[str, Any], fields: dict[str, str], bucket: str
) -> tuple[int, int | None]:
    """The form against the policy's conditions (AccessDenied "Invalid according to
    Policy: ..." when one fails or a field is not allowed by any); the bounds of the
    file's size from content-length-range."""
    values = {**fields, "bucket": bucket}
    allowed = {"bucket"}
    low, high = 0, None
    for condition in policy["conditions"]:
        if isinstance(condition, dict) and len(condition) == 1:
            (name, expected), op = next(iter(condition.items())), "eq"
            name = "$" + name
        elif isinstance(condition, list) and len(condition) == 3:
            op, name, expected = condition
            op = str(op).lower()
        else:
            raise _policy_error("Invalid Condition: " + json.dumps(condition))
        if op == "content-length-range":
            try:
                low, high = int(name), int(expected)
            except (TypeError, ValueError):
                raise _policy_error("Invalid content-length-range: "
                                    + json.dumps(condition)) from None  # fmt: skip
            continue
        if op not in ("eq", "starts-with") or not str(name).startswith("$"):
            raise _policy_error("Invalid Condition: " + json.dumps(condition))
        field = str(name)[1:].lower()
        allowed.add(field)
        value = values.get(field, "")
        holds = value == str(expected) if op == "eq" else value.startswith(str(expected))
        if not holds:
            raise _denied(f"Policy Condition failed: {json.dumps(condition)}")
    extra = [name for name in fields if name not in allowed and name not in UNCHECKED
             and not name.startswith(UNCHECKED_PREFIX)]  # fmt: skip
    if extra:
        raise _denied("Extra input fields: " + ", ".join(extra))
    return low, high


async def authenticate(call: Call, fields: dict[str, str]) -> tuple[int, int | None]:
    """The policy checked and its signer signed in (no policy: an anonymous upload,
    which Swift's ACLs refuse unless anyone may write); the file's size bounds."""
    if "policy" not in fields:
        return 0, None
    encoded = fields["policy"]
    if "x-amz-signature" in fields or "x-amz-algorithm" in fields:
        if _required(fields, "x-amz-algorithm") != V4:
            raise S3Error("InvalidArgument", "Only AWS4-HMAC-SHA256 is supported",
                          ArgumentName="x-amz-algorithm",
                          ArgumentValue=fields["x-amz-algorithm"])  # fmt: skip
        credential = _required(fields, "x-amz-credential")
        _required(fields, "x-amz-date")
        signature = _required(fields, "x-amz-signature")
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
            raise S3Error("InvalidArgument", "Invalid credential",
                          ArgumentName="x-amz-credential", ArgumentValue=credential)  # fmt: skip
        access, scope = parts[0], (parts[1], parts[2], parts[3])
    else:
        access = _required(fields, "awsaccesskeyid")
        signature, scope = _required(fields, "signature"), None
    await call.gateway.authenticate_form(call, access, encoded, signature, scope)
    return check_conditions(decode_policy(encoded), fields, call.req.bucket)


# -- the upload ------------------------------------------------------------------------------


def file_receive(form: FormReader, low: int, high: int | None) -> Receive:
    """The file part's bytes as the Swift PUT reads its body; a size out of the
    policy's content-length-range fails the read (so nothing is stored)."""
    size = 0
    ended = False

    async def receive() -> Message:
        nonlocal size, ended
        if ended:
            return {"type": "http.request", "body": b"", "more_body": False}
        event = await form.event()
        if event is None:  # the body ended inside the file: nothing is stored
            raise S3Error("MalformedPOSTRequest")
        if event[0] == "end":
            ended = True
            if size < low:
                raise S3Error("EntityTooSmall", ProposedSize=str(size),
                              MinSizeAllowed=str(low))  # fmt: skip
            return {"type": "http.request", "body": b"", "more_body": False}
        size += len(event[1])
        if high is not None and size > high:
            raise S3Error("EntityTooLarge", MaxSizeAllowed=str(high))
        return {"type": "http.request", "body": event[1], "more_body": True}

    return receive


async def drain(form: FormReader) -> None:
    """What follows the file (fields S3 ignores there), read up to a bound."""
    seen = 0
    while seen < MAX_DRAIN_BYTES and (event := await form.event()) is not None:
        seen += len(event[1]) if event[0] == "data" else 0


def _redirect_to(url: str, bucket: str, key: str, etag: str) -> str:
    # What HTTP cannot carry in a Location header is percent-encoded (as a browser would).
    url = quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    scheme, netloc, path, query, fragment = urlsplit(url)
    added = urlencode({"bucket": bucket, "key": key, "etag": etag})
    return urlunsplit((scheme, netloc, path, f"{query}&{added}" if query else added, fragment))


async def post_object(call: Call) -> None:
    from cumulo.object_store.s3 import handlers

    req = call.req
    _, options = parse_options_header(req.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise S3Error("MalformedPOSTRequest")
    form = FormReader(call.receive, boundary)
    fields, filename = await read_fields(form)
    key = _required(fields, "key").replace("${filename}", filename)
    low, high = await authenticate(call, fields)
    if not key:
        raise S3Error("InvalidArgument", "User key must have a length greater than 0.",
                      ArgumentName="key", ArgumentValue="")  # fmt: skip
    if len(key.encode()) > handlers.MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(len(key.encode())), MaxSizeAllowed="1024")
    req.key = key
    # The fields a PutObject would take as headers (S3 reads the same names).
    given = {
        name: handlers.header_value(value)
        for name, value in fields.items()
        if name.startswith("x-amz-") or name in (*handlers.PLAIN_HEADERS, "content-type")
    }
    await acl.resolve_grant_emails(call, given)
    headers = handlers.swift_object_headers(call, given)
    headers["transfer-encoding"] = "chunked"
    expires = await configs.lifecycle_delete_at(call)
    if expires is not None:
        headers["x-delete-at"] = expires
    answer = await call.swift(
        "PUT", call.swift_path(req.bucket, key), headers=headers,
        receive=file_receive(form, low, high),
    )  # fmt: skip
    await handlers.fail_object(call, answer)
    await drain(form)
    etag = f'"{answer.headers.get("etag", "").strip(chr(34))}"'
    scheme = call.scope.get("scheme", "http")
    location = f"{scheme}://{req.host}/{quote(req.bucket)}/{quote(key)}"
    if req.virtual_host:
        location = f"{scheme}://{req.host}/{quote(key)}"
    reply = {"etag": etag, "location": location, **await handlers.version_id_of_put(call, answer)}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        reply["location"] = _redirect_to(redirect, req.bucket, key, etag)
        return await call.respond(303, headers=reply)
    status = STATUSES.get(fields.get("success_action_status", ""), 204)
    if status != 201:
        return await call.respond(status, headers=reply)
    result = element("PostResponse")
    for tag, value in (("Location", location), ("Bucket", req.bucket), ("Key", key),
                       ("ETag", etag)):  # fmt: skip
        sub(result, tag, value)
    await call.xml(document(result), 201, headers=reply)

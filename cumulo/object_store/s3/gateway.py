"""The S3 front of the object store's port: tells S3 requests from Swift ones, checks
their signature, and carries each S3 operation out as Swift requests on the Swift API's
routes, called directly (app.SwiftRoutes: ACLs, quotas, large objects and the storage
layer are the Swift API's own; the middleware the S3 request went through once is not
gone through again for each of them)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common.app import RequestRecord
from cumulo.common.aws_credentials import Credential, CredentialCache
from cumulo.common.faults import ApiError
from cumulo.common.request_ids import new_request_id, working_for
from cumulo.common.zerocopy import EXTENSION
from cumulo.object_store.core import ObjectStore, transaction_id
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.request import S3Request, parse
from cumulo.object_store.s3.signature import (
    STREAMING,
    UNSIGNED,
    ChunkDecoder,
    Signed,
    claim,
    sign_policy,
)

LOG = logging.getLogger(__name__)

# Paths of the port that stay Swift's when a request carries no S3 signature.
SWIFT_PATHS = ("/info", "/healthcheck", "/metrics", "/crossdomain.xml", "/openapi.json")
# The reserved account whose containers map a bucket name to its owner's account
# (S3 bucket names are one namespace across the cloud; Swift's are per account).
BUCKET_INDEX = ".s3-buckets"
OWNER_KEY = "X-Container-Meta-S3-Account"
SEGMENTS = "+segments"  # the container of a bucket's multipart parts (as Swift's s3api)


# A body's SHA-256 is computed in a worker thread a MiB at a time (hashlib lets go of the
# GIL over large buffers): the event loop goes on serving while a large upload is hashed,
# and the hash of each piece overlaps what the Swift app does with it. What is left under
# INLINE_HASH at the end (and a small body) is hashed in the loop: a thread costs more.
HASH_BATCH = 1 << 20
INLINE_HASH = 64 << 10
_hashers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-sha256")


def _update(digest: hashlib._Hash, pieces: list[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


class PayloadHash:
    """The SHA-256 of a body as it streams by (pieces in order, one batch at a time)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.batch: list[bytes] = []
        self.size = 0
        self.pending: asyncio.Future[None] | None = None

    async def _send(self) -> None:
        batch, self.batch, self.size = self.batch, [], 0
        if self.pending is not None:
            await self.pending  # the batch before (the digest takes them in order)
        self.pending = asyncio.get_running_loop().run_in_executor(
            _hashers, _update, self.digest, batch
        )

    async def update(self, data: bytes) -> None:
        if data:
            self.batch.append(data)
            self.size += len(data)
            if self.size >= HASH_BATCH:
                await self._send()

    async def hexdigest(self) -> str:
        if self.size >= INLINE_HASH:
            await self._send()
        if self.pending is not None:
            await self.pending
        _update(self.digest, self.batch)
        self.batch, self.size = [], 0
        return self.digest.hexdigest()


@dataclass
class SwiftAnswer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Call:
    """One S3 request being served."""

    gateway: S3Gateway
    scope: Scope
    req: S3Request
    receive: Receive
    send: Send
    request_id: str
    signed: Signed | None = None
    credential: Credential | None = None
    account: str | None = None  # the bucket's account
    started: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> ObjectStore:
        return self.gateway.store

    @property
    def authenticated(self) -> bool:
        return self.credential is not None

    # -- answering ---------------------------------------------------------------------

    def _headers(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        base = {
            "x-amz-request-id": self.request_id,
            "x-amz-id-2": self.request_id,
            **self.extra_headers,
            **headers,
        }
        return [(k.lower().encode(), str(v).encode("latin-1")) for k, v in base.items()]

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        await self.send(
            {"type": "http.response.start", "status": status, "headers": self._headers(headers)}
        )

    async def respond(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        headers = dict(headers or {})
        if body:
            headers.setdefault("content-type", "application/xml")
        headers["content-length"] = str(len(body))
        await self.start(status, headers)
        send_body = body if self.req.method != "HEAD" else b""
        await self.send({"type": "http.response.body", "body": send_body})

    async def xml(self, body: bytes, status: int = 200, headers: dict | None = None) -> None:
        await self.respond(status, body, {"content-type": "application/xml", **(headers or {})})

    # -- Swift requests ----------------------------------------------------------------

    def swift_path(self, container: str | None = None, obj: str | None = None) -> str:
        assert self.account is not None
        path = f"/v1/{self.account}"
        if container is not None:
            path += "/" + container
            if obj is not None:
                path += "/" + obj
        return path

    def _sub_scope(
        self, method: str, path: str, query: dict | None, headers: dict, token: str | None
    ) -> Scope:
        hdrs = {k.lower(): v for k, v in headers.items()}
        if token is not None:
            hdrs["x-auth-token"] = token
        elif self.credential is not None and self.credential.token:
            hdrs["x-auth-token"] = self.credential.token
        hdrs.setdefault("host", self.req.host or "localhost")
        raw = [(k.encode(), str(v).encode("latin-1")) for k, v in hdrs.items()]
        qs = urlencode(query, quote_via=quote).encode() if query else b""
        return {
            **self.scope,
            "method": method,
            "path": path,
            "raw_path": quote(path).encode(),
            "query_string": qs,
            "headers": raw,
            "state": dict(self.scope["state"]),  # the S3 request's ids: its log lines'
            "cumulo.s3": True,  # lets Swift keep and show the s3api sysmeta
        }

    async def swift(
        self,
        method: str,
        path: str,
        *,
        query: dict | None = None,
        headers: dict | None = None,
        body: bytes | None = None,
        receive: Receive | None = None,
        stream_to: Callable[[int, dict[str, str]], Awaitable[bool]] | None = None,
        sink: Callable[[Message], Awaitable[None]] | None = None,
        as_service: bool = False,
    ) -> SwiftAnswer:
        """One request to the Swift app in-process. With stream_to, the answer's body goes
        to the client (or to sink) as it comes once stream_to(status, headers) says so.
        as_service: with the service's rights (the reseller admin's), for what an object's
        own ACL grants the caller beyond Swift's container ACLs (acl.object_access)."""
        token = None
        if as_service:
            token = await self.store.validator.client.service_token()  # type: ignore[union-attr]
            # A symlink is not followed with those rights (it may name another account).
            query = {**(query or {}), "symlink": "get"}
        sub = self._sub_scope(method, path, query, headers or {}, token)
        if stream_to is None or sink is not None:  # the body is not the client's answer
            sub.pop("extensions", None)
        if receive is None:
            payload = body or b""
            sent = False

            async def receive() -> Message:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}

            sub["headers"].append((b"content-length", str(len(payload)).encode()))
        answer = SwiftAnswer(500, {})
        chunks: list[bytes] = []
        streaming = False

        async def send(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                }
                if stream_to is not None:
                    streaming = await stream_to(answer.status, answer.headers)
            elif message["type"] == "http.response.body":
                if streaming and sink is not None:
                    await sink(message)
                elif streaming and self.req.method == "HEAD":
                    await self.send({**message, "body": b""})
                elif streaming:
                    await self.send(message)
                else:
                    chunks.append(message.get("body", b""))
            elif message["type"] == EXTENSION:  # a file's bytes, sent as they are
                await self.send(message)

        await self.gateway.swift(sub, receive, send)
        answer.body = b"".join(chunks)
        return answer

    @asynccontextmanager
    async def swift_piped(
        self,
        path: str,
        *,
        query: dict | None = None,
        headers: dict | None = None,
        as_service: bool = False,
    ) -> AsyncIterator[tuple[SwiftAnswer, Receive]]:
        """A GET whose body, when it succeeds, is read as the body of another Swift request
        (a copy the Swift app cannot make itself) as it comes, not held in memory. The
        answer's body is there only when it did not succeed."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=4)
        started: asyncio.Future[SwiftAnswer] = asyncio.get_running_loop().create_future()

        async def start(status: int, headers: dict[str, str]) -> bool:
            started.set_result(SwiftAnswer(status, headers))
            return status in (200, 206)

        async def sink(message: Message) -> None:
            more = message.get("more_body", False)
            await queue.put({"type": "http.request", "body": message.get("body", b""),
                             "more_body": more})  # fmt: skip

        reader = asyncio.create_task(
            self.swift("GET", path, query=query, headers=headers, stream_to=start, sink=sink,
                       as_service=as_service)
        )  # fmt: skip

        async def receive() -> Message:
            if queue.empty() and not reader.done():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    return getter.result()
                getter.cancel()
            if not queue.empty():  # what the reader put before it ended
                return queue.get_nowait()
            reader.result()  # the reader's error, if it failed
            return {"type": "http.request", "body": b"", "more_body": False}

        try:
            await asyncio.wait({started, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not started.done() or started.result().status not in (200, 206):
                answer = await reader
                yield answer, receive
            else:
                yield started.result(), receive
        finally:
            reader.cancel()

    def body_receive(self) -> Receive:
        """The client's body as the Swift app reads it: aws-chunked decoded, and checked
        against x-amz-content-sha256 (a mismatch fails the read, so nothing is stored)."""
        signed = self.signed
        payload = signed.payload_hash if signed and signed.version == 4 else UNSIGNED
        decoder = None
        if payload == STREAMING:
            assert self.credential is not None and signed is not None
            decoder = ChunkDecoder(signed, signed.signing_key(self.credential.secret))
        digest = PayloadHash() if payload not in (UNSIGNED, STREAMING) else None
        upstream = self.receive
        try:
            declared = int(self.req.headers.get("content-length", "-1"))
        except ValueError:
            declared = -1
        seen = 0

        async def receive() -> Message:
            nonlocal seen
            message = await upstream()
            if message["type"] != "http.request":
                return message
            data = message.get("body", b"")
            seen += len(data)
            if decoder is not None:
                data = decoder.feed(data)
            if digest is not None:
                await digest.update(data)
            # The reader may stop at Content-Length without waiting for the last message.
            if not message.get("more_body", False) or seen == declared:
                if decoder is not None and not decoder.done:
                    raise S3Error("IncompleteBody")
                if digest is not None and await digest.hexdigest() != payload:
                    raise S3Error("XAmzContentSHA256Mismatch")
            return {**message, "body": data}

        return receive

    async def read_body(self, limit: int = 10 * 1024 * 1024) -> bytes:
        receive = self.body_receive()
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
                raise S3Error("EntityTooLarge")
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _route(req: S3Request) -> str:
    """An S3 request's route in the metrics and logs (what a Swift route's template is)."""
    if not req.bucket:
        return "s3:/"
    return "s3:/{bucket}/{key}" if req.key else "s3:/{bucket}"


class S3Gateway:
    """swift: the Swift API's routes (app.SwiftRoutes), where S3 operations are carried
    out; app: the Swift app, what is not S3 goes on to."""

    def __init__(
        self, app: ASGIApp, store: ObjectStore | None = None, swift: ASGIApp | None = None
    ) -> None:
        self.app = app
        self.swift = swift or app
        self._store = store
        self._credentials = CredentialCache()

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise RuntimeError("S3Gateway needs the object store")
        return self._store

    def bind(self, store: ObjectStore) -> None:
        self._store = store

    def is_s3(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            return False
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        if auth.startswith((b"AWS4-HMAC-SHA256 ", b"AWS ")):
            return True
        domain = self.store.config.s3_domain
        host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0]
        if domain and host.endswith("." + domain):
            return True
        qs = scope.get("query_string", b"")
        if b"X-Amz-Algorithm=" in qs or b"AWSAccessKeyId=" in qs:
            return True
        return path not in SWIFT_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.is_s3(scope):
            await self.app(scope, receive, send)
            return
        # Its log lines, metrics and x-amz-request-id, as a Swift request's
        # (RequestIdMiddleware, TransIdMiddleware): the Swift requests it is carried out
        # as are not logged or counted again.
        local_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"], state["global_request_id"] = local_id, None
        req = parse(scope, self.store.config.s3_domain)
        record = RequestRecord("object-store", scope, route=_route(req))

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        with working_for(local_id, None), record:
            call = Call(self, scope, req, receive, send_recorded, transaction_id(local_id))
            try:
                await self._serve(call)
            finally:
                record.caller = call.credential  # who, in its log line

    async def _serve(self, call: Call) -> None:
        from cumulo.object_store.s3 import handlers

        req, request_id = call.req, call.request_id
        try:
            await self.authenticate(call)
            await handlers.dispatch(call)
        except S3Error as exc:
            if call.started:
                raise
            await call.respond(exc.status, exc.document(req.resource, request_id))
        except ApiError as exc:  # Identity unreachable and the like
            if call.started:
                raise
            LOG.warning("S3 request failed: %s", exc)
            err = S3Error("ServiceUnavailable" if exc.status == 503 else "InternalError")
            await call.respond(err.status, err.document(req.resource, request_id))

    # -- authentication ------------------------------------------------------------

    async def authenticate(self, call: Call) -> None:
        signed = claim(call.req)
        if signed is None:
            return
        client = self.store.validator.client  # type: ignore[union-attr]
        cred = await self._credentials.get(client, signed.access)
        if cred is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=signed.access)
        if not cred.secret or not signed.matches(cred.secret):
            raise S3Error(
                "SignatureDoesNotMatch",
                AWSAccessKeyId=signed.access,
                StringToSign=signed.string_to_sign,
                SignatureProvided=signed.signature,
            )
        if not cred.token_fresh():
            # Identity checks the signature again and says who may act (user and project
            # enabled, roles): the token the Swift requests carry.
            token = await client.s3_token(signed.access, signed.string_to_sign, signed.signature)
            if token is None:
                raise S3Error("AccessDenied")
            cred.keep_token(token)
        call.signed, call.credential = signed, cred

    async def authenticate_form(
        self, call: Call, access: str, policy: str, signature: str,
        scope: tuple[str, str, str] | None,
    ) -> None:  # fmt: skip
        """A POST form's signature of its policy (post_object.py), checked with the secret
        of the credential it names; the project token is then Identity's answer for the
        policy signed as SigV2 signs it (what /v3/s3tokens checks)."""
        client = self.store.validator.client  # type: ignore[union-attr]
        cred = await self._credentials.get(client, access)
        if cred is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access)
        expected = sign_policy(cred.secret, policy, scope) if cred.secret else ""
        if not expected or not hmac.compare_digest(expected.encode(), signature.encode()):
            raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access,
                          StringToSign=policy, SignatureProvided=signature)  # fmt: skip
        if not cred.token_fresh():
            v2 = sign_policy(cred.secret, policy, None)
            token = await client.s3_token(access, policy, v2)
            if token is None:
                raise S3Error("AccessDenied")
            cred.keep_token(token)
        call.credential = cred

    # -- the bucket namespace --------------------------------------------------------

    async def bucket_account(self, bucket: str) -> str | None:
        info = await self.store.proxy.container_info(BUCKET_INDEX, bucket)
        if info.status != 200:
            return None
        return (info.metadata or {}).get(OWNER_KEY)

    async def claim_bucket(self, bucket: str, account: str) -> str:
        """Record the bucket as the account's; the account that holds it."""
        owner = await self.bucket_account(bucket)
        if owner is not None:
            return owner
        await self.store.proxy.container_put(
            BUCKET_INDEX, bucket, self.store.policies.default, {OWNER_KEY: account}
        )
        return account

    async def release_bucket(self, bucket: str, account: str) -> None:
        if await self.bucket_account(bucket) == account:
            try:
                await self.store.proxy.container_delete(BUCKET_INDEX, bucket)
            except Exception:  # noqa: BLE001 - an index row left is harmless; logged
                LOG.warning("S3 bucket index: %s not released", bucket, exc_info=True)

"""The EC2 Query API ASGI app (port 8788), and the service behind it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common.app import create_app
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import ApiError, render_identity
from cumulo.common.identity_client import IdentityClient
from cumulo.common.openapi import describes
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.ec2 import auth, certificate, protocol
from cumulo.ec2.api import load
from cumulo.ec2.core import Ctx, Ec2Service
from cumulo.ec2.errors import Ec2Error

LOG = logging.getLogger(__name__)

# Parameters of the protocol itself, not of the action.
_PROTOCOL_FIELDS = {
    "Action",
    "Version",
    "AWSAccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "Timestamp",
    "Expires",
    "SecurityToken",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
}
# A Query API form is small (user data is 16 KiB at most): a larger body is not read.
MAX_FORM_BYTES = 1024 * 1024
# Services the EC2 API calls, by the catalog's port attribute.
_BACKENDS = {
    "compute": "compute",
    "image": "image",
    "network": "network",
    "volume": "block_storage",
    "object-store": "object_store",
}


async def open_ec2_service(
    config: CumuloConfig, state_dir: Path, *, apps: dict[str, ASGIApp | None] | None = None
) -> Ec2Service:
    """Migrate the EC2 database and build the service; `apps`: the identity and backend
    APIs to call in-process (by name), else they are reached over HTTP."""
    apps = apps or {}
    db = Database(database_url(config, state_dir, "ec2"), "ec2")
    await db.migrate()
    identity = IdentityClient(config, app=apps.get("identity"))
    clients = {}
    for name, port_attr in _BACKENDS.items():
        app = apps.get(name)
        if app is not None:
            clients[name] = ServiceClient(name, app=app)
        else:
            url = config.public_url(getattr(config.ports, port_attr))
            clients[name] = ServiceClient(name, url=url, verify=verify_option(config))
    return Ec2Service(config, state_dir, db, identity, clients)


def create_ec2_app(service: Ec2Service):
    handlers = load()

    @describes(
        body={
            "type": "object",
            "properties": {"Action": {"type": "string"}, "Version": {"type": "string"}},
        },
        content_type="application/x-www-form-urlencoded",
        query=("Action", "Version", "AWSAccessKeyId", "Signature", "SignatureVersion"),
    )
    async def endpoint(request: Request) -> Response:
        request_id = request.scope.get("state", {}).get("request_id", "")
        try:
            body = await _form_body(request)
            fields = dict(request.query_params)
            if request.method == "POST":
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                both = sorted(fields.keys() & form.keys())
                if both:
                    # Which one AWS would take is not documented: neither is guessed.
                    raise Ec2Error(
                        "InvalidParameterCombination",
                        f"The parameter {both[0]} is both in the URL and in the form body.",
                    )
                fields.update(form)
            name = fields.get("Action")
            if not name:
                raise Ec2Error("MissingAction", "The request must contain the parameter Action")
            signed = auth.SignedRequest(
                verb=request.method,
                host=request.headers.get("host", ""),
                path=request.url.path,
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                fields=fields,
            )
            cred = await auth.authenticate(
                signed, service.identity, service.credentials, service.config.region
            )
            op = protocol.operation(name)
            if op is None:
                raise Ec2Error(
                    "InvalidAction", f"The action {name} is not valid for this web service."
                )
            handler = handlers.get(name)
            if handler is None:
                raise Ec2Error(
                    "UnsupportedOperation", f"The action {name} is not supported by this cloud yet."
                )
            params = protocol.parse(
                op, {k: v for k, v in fields.items() if k not in _PROTOCOL_FIELDS}
            )
            if params.pop("DryRun", False):
                raise Ec2Error(
                    "DryRunOperation", "Request would have succeeded, but DryRun flag is set."
                )
            assert cred.token is not None
            ctx = Ctx(service, cred.token, cred.project_id, cred.user_id, request_id)
            result = await handler(ctx, params)
            return Response(protocol.render(op, result, request_id), media_type="text/xml")
        except Ec2Error as err:
            return Response(err.document(request_id), status_code=err.status, media_type="text/xml")
        except ApiError as exc:  # Identity unreachable and the like
            LOG.warning("EC2 request failed: %s", exc)
            code = "Unavailable" if exc.status == 503 else "InternalError"
            err = Ec2Error(code, exc.message)
            return Response(err.document(request_id), status_code=err.status, media_type="text/xml")
        except Exception:
            LOG.exception("EC2 request failed")
            err = Ec2Error("InternalError", "An internal error has occurred")
            return Response(err.document(request_id), status_code=500, media_type="text/xml")

    async def cloud_certificate(_request: Request) -> Response:
        """The certificate bundles are encrypted to (`euca-bundle-image --ec2cert`)."""
        return Response(
            certificate.certificate_pem(service.state_dir), media_type="application/x-pem-file"
        )

    routes = [
        Route("/", endpoint, methods=["GET", "POST"]),
        Route("/cloud-cert.pem", cloud_certificate, methods=["GET"]),
    ]
    app = create_app("ec2", routes, render_identity, dialect="ec2")
    app.add_middleware(Ec2ErrorDocuments)
    app.state.ec2 = service
    return app


async def _form_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise Ec2Error(
                "InvalidRequest", f"The request body is over {MAX_FORM_BYTES} bytes.", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


class Ec2ErrorDocuments:
    """What is refused before the endpoint reads an action — [limits] (URL, headers,
    rate), a path or method it does not serve, an unexpected failure — answered as an EC2
    error document instead of the JSON body the common app writes: `InvalidRequest` with
    the refusal's status, `RequestLimitExceeded` (503, EC2's throttling) for a rate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_as_ec2(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(
                    b"application/json"
                ):
                    start = message
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await self._send_document(scope, start, b"".join(chunks), send)
                return
            await send(message)

        await self.app(scope, receive, send_as_ec2)

    @staticmethod
    async def _send_document(scope: Scope, start: Message, body: bytes, send: Send) -> None:
        status = start["status"]
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = "The request was refused."
        if status == 429:
            err = Ec2Error("RequestLimitExceeded", message, status=503)
        elif status >= 500:
            err = Ec2Error("Unavailable" if status == 503 else "InternalError", message, status)
        else:
            err = Ec2Error("InvalidRequest", message, status)
        document = err.document(scope.get("state", {}).get("request_id", ""))
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k not in (b"content-type", b"content-length")
        ]
        headers += [
            (b"content-type", b"text/xml"),
            (b"content-length", str(len(document)).encode()),
        ]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": document})

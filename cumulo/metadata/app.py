"""The metadata service (Nova's metadata API) as an ASGI app.

It serves guests only through the network agent's proxy, which adds who is asking:
X-Instance-ID and X-Tenant-ID, X-Instance-ID-Signature (HMAC-SHA256 of the instance id
with the shared secret) and X-Forwarded-For (the guest's address). A request whose
signature does not check out is refused (403), and so is one whose forwarded address
is not one of that instance's ports. `cumulo up` serves it on 127.0.0.1, port
`ports.metadata` (8775): the proxies run in the same process (see
cumulo.network.dataplane.metadata_proxy) and reach it there.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import create_app
from cumulo.common.db import Database
from cumulo.common.faults import ApiError, BadRequest, Conflict, Forbidden, NotFound, render_compute
from cumulo.compute.models import Instance
from cumulo.metadata import documents, instances
from cumulo.metadata.signature import (
    FORWARDED_FOR,
    INSTANCE_ID,
    SIGNATURE,
    TENANT_ID,
    signature_is_valid,
)
from cumulo.metadata.vendordata import VendorData, VendorDataError

LOG = logging.getLogger(__name__)


async def identify(request: Request) -> Instance:
    """The calling guest, from the proxy's signed headers (Nova's checks, in its order)."""
    db: Database = request.app.state.compute_db
    headers = request.headers
    instance_id = headers.get(INSTANCE_ID)
    if not instance_id:
        raise BadRequest("X-Instance-ID header is missing from request.")
    if not signature_is_valid(request.app.state.secret, instance_id, headers.get(SIGNATURE, "")):
        LOG.warning("metadata: refused a request for %s with a bad signature", instance_id)
        raise Forbidden("Invalid proxy request signature.")
    tenant_id = headers.get(TENANT_ID)
    if not tenant_id:
        raise BadRequest("X-Tenant-ID header is missing from request.")
    inst = await instances.find_instance(db, instance_id)
    if inst is None or inst.project_id != tenant_id:
        raise NotFound("Instance not found.")
    remote = (headers.get(FORWARDED_FOR) or "").split(",")[0].strip()
    if remote not in instances.fixed_ips(inst):
        LOG.warning("metadata: %s is not an address of %s", remote or "?", instance_id)
        raise Forbidden("The request does not come from this instance's address.")
    return inst


async def serve_metadata(request: Request) -> Response:
    inst = await identify(request)
    path = request.path_params["path"]
    if documents.is_password_path(path):
        return await _password(request, inst)
    if request.method == "POST":
        raise BadRequest("Only the password can be written.")
    vendor_data: VendorData = request.app.state.vendor_data
    meta = vendor_data.listed(instances.metadata_of(inst))
    if documents.names_vendor_data(path):  # collected only when asked for (targets are slow)
        try:
            meta = await vendor_data.collect(meta)
        except VendorDataError as exc:
            LOG.error("metadata: vendor data for %s failed: %s", inst.uuid, exc)
            raise ApiError("Vendor data is unavailable.") from None
    doc = documents.resolve(meta, path)
    if doc is None:
        raise NotFound("The resource could not be found.")
    return Response(doc.body, media_type=doc.content_type)


async def _password(request: Request, inst: Instance) -> Response:
    """GET: the password the guest posted (or nothing); POST: once, as Nova."""
    if request.method != "POST":
        return Response(instances.password_of(inst), media_type="text/plain")
    if instances.password_of(inst):
        raise Conflict("The password was already set.")
    body = await request.body()
    if len(body) > instances.MAX_PASSWORD:
        raise BadRequest("Request is too large.")
    password = body.decode(errors="replace")
    if not await instances.store_password(request.app.state.compute_db, inst.uuid, password):
        raise Conflict("The password was already set.")
    return Response(b"", media_type="text/plain")


def create_metadata_app(
    compute_db: Database, shared_secret: str, vendor_data: VendorData | None = None
) -> Starlette:
    routes = [Route("/{path:path}", serve_metadata, methods=["GET", "HEAD", "POST"])]
    app = create_app("metadata", routes, render_compute)
    app.state.compute_db = compute_db
    app.state.secret = shared_secret
    app.state.vendor_data = vendor_data or VendorData()
    return app

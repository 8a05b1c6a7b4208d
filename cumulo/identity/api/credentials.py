"""/v3/credentials, /v3/users/{user_id}/credentials/OS-EC2, /v3/ec2tokens and /v3/s3tokens.

A credential's blob is a JSON string stored Fernet-encrypted with the credential
keys and shown decrypted, as Keystone does. An ec2 credential's blob holds
{"access", "secret"}; its id is sha256(access) and its access key is indexed, so
the EC2 and S3 front ends can trade a signed request for a project token.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from pydantic import Field, StrictStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.context import RequestContext
from cumulo.common.faults import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)
from cumulo.identity import ec2_signature
from cumulo.identity.api.common import (
    Body,
    authorize,
    base_url,
    context,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    self_link,
)
from cumulo.identity.core import Identity
from cumulo.identity.models import ApplicationCredential, Credential, Project, User
from cumulo.identity.tokens import SCOPE_PROJECT

LOG = logging.getLogger(__name__)

EC2 = "ec2"
EC2_METHOD = "ec2credential"
MAX_BLOB = 32 * 1024
MAX_ACCESS_KEY = 64
# How long a signed request stays good (Keystone's [credential] auth_ttl).
AUTH_TTL = timedelta(minutes=15)
_FIELDS = {"id", "blob", "type", "user_id", "project_id", "links"}


def _missing(attribute: str) -> BadRequest:
    """Keystone's ValidationError wording for a missing attribute."""
    return BadRequest(
        f"Expecting to find {attribute} in credential. The server could not comply with the "
        "request since it is either malformed or otherwise incorrect. The client is assumed "
        "to be in error."
    )


def is_ec2(cred_type: str | None) -> bool:
    return (cred_type or "").lower() == EC2


def credential_id_for(access: str) -> str:
    return hashlib.sha256(access.encode()).hexdigest()


def ec2_blob(blob: str) -> dict[str, Any]:
    """The parsed blob of an ec2 credential; 400 unless it names an access key."""
    try:
        data = jsonlib.loads(blob)
    except ValueError:
        raise BadRequest("Invalid blob in credential") from None
    if not data or not isinstance(data, dict):
        raise _missing("blob")
    access = data.get("access")
    if access is None:
        raise _missing("access")
    if not isinstance(access, str) or not access or len(access) > MAX_ACCESS_KEY:
        raise BadRequest(f"The access key must be a string of 1 to {MAX_ACCESS_KEY} characters.")
    return data


def encrypt_blob(identity: Identity, blob: str) -> str:
    return identity.credential_fernet.encrypt(blob.encode()).decode()


def decrypt_blob(identity: Identity, cred: Credential) -> str:
    try:
        return identity.credential_fernet.decrypt(cred.encrypted_blob.encode()).decode()
    except InvalidToken:
        # The credential keys were rotated past the key this blob was encrypted with.
        raise ApiError(
            f"Credential {cred.id} cannot be decrypted with the credential keys."
        ) from None


def render_credential(request: Request, cred: Credential) -> dict[str, Any]:
    return {
        **(cred.extra or {}),
        "id": cred.id,
        "user_id": cred.user_id,
        "project_id": cred.project_id,
        "type": cred.type,
        "blob": decrypt_blob(identity_of(request), cred),
        "links": self_link(request, f"credentials/{cred.id}"),
    }


def _target(cred: Credential | None) -> dict[str, Any]:
    if cred is None:
        return {"credential": {}}
    return {
        "credential": {
            "id": cred.id,
            "user_id": cred.user_id,
            "project_id": cred.project_id,
            "type": cred.type,
        }
    }


def _allowed(request: Request, ctx: RequestContext, rule: str, target: dict[str, Any]) -> bool:
    return identity_of(request).policy.check(rule, ctx, {"target": target, **target})


async def _refuse_ec2_derived(request: Request, ctx: RequestContext) -> None:
    """A token obtained with an EC2 signature cannot mint more EC2 credentials."""
    payload, _ = await identity_of(request).validate(ctx.auth_token)
    if EC2_METHOD in payload.methods:
        raise Forbidden("A token issued from an EC2 credential cannot create credentials.")


async def _get(request: Request, credential_id: str) -> Credential | None:
    async with identity_of(request).read() as session:
        return await session.get(Credential, credential_id)


async def _store(request: Request, cred: Credential) -> None:
    try:
        async with identity_of(request).write() as session:
            if await session.get(User, cred.user_id) is None:
                raise NotFound(f"Could not find user: {cred.user_id}.")
            session.add(cred)
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store credential - Duplicate ID, {cred.id}."
        ) from None


async def _remove(request: Request, cred: Credential) -> None:
    async with identity_of(request).write() as session:
        row = await session.get(Credential, cred.id)
        if row is not None:
            await session.delete(row)


# -- /v3/credentials (api-ref: Credentials) ------------------------------------------


class CredentialCreate(Body):
    blob: StrictStr = Field(max_length=MAX_BLOB)
    type: StrictStr = Field(min_length=1, max_length=255)
    user_id: StrictStr = Field(min_length=1, max_length=64)
    project_id: StrictStr | None = Field(None, max_length=64)


class CredentialUpdate(Body):
    blob: StrictStr | None = Field(None, max_length=MAX_BLOB)
    type: StrictStr | None = Field(None, min_length=1, max_length=255)
    user_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    project_id: StrictStr | None = Field(None, max_length=64)


def _extras(body: Body) -> dict[str, Any]:
    return {k: v for k, v in (body.model_extra or {}).items() if k not in _FIELDS}


def _section(data: Any) -> Any:
    return data.get("credential") if isinstance(data, dict) else None


async def create_credential(request: Request) -> Response:
    body = validate(CredentialCreate, _section(await json_body(request)))
    ctx = await authorize(
        request, "identity:create_credential", {"credential": {"user_id": body.user_id}}
    )
    blob = body.blob
    access = None
    if is_ec2(body.type):
        if not body.project_id:
            raise _missing("project_id")
        await _refuse_ec2_derived(request, ctx)
        data = ec2_blob(blob)
        access = data["access"]
        if ctx.app_cred_id:
            # The tokens this credential gives carry the application credential's limits.
            data["app_cred_id"] = ctx.app_cred_id
            blob = jsonlib.dumps(data)
    cred = Credential(
        id=credential_id_for(access) if access else new_id(),
        user_id=body.user_id,
        project_id=body.project_id,
        type=body.type,
        encrypted_blob=encrypt_blob(identity_of(request), blob),
        access_key=access,
        extra=_extras(body),
    )
    await _store(request, cred)
    return json({"credential": render_credential(request, cred)}, status=201)


async def list_credentials(request: Request) -> Response:
    ctx = await context(request)
    await authorize(request, "identity:list_credentials", {"credential": {"user_id": ctx.user_id}})
    query = select(Credential)
    for name in ("user_id", "type"):
        if value := request.query_params.get(name):
            query = query.where(getattr(Credential, name) == value)
    if not _allowed(request, ctx, "identity:get_credential", _target(None)):
        # Callers who may only read their own credentials never page through others'.
        query = query.where(Credential.user_id == ctx.user_id)
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, Credential.id)
    visible = [
        render_credential(request, c)
        for c in rows
        if _allowed(request, ctx, "identity:get_credential", _target(c))
    ]
    return json(list_body(request, "credentials", visible, truncated))


async def _authorized_credential(request: Request, rule: str) -> Credential:
    """The credential of the path, after the policy check on it (403 before 404, as Keystone)."""
    credential_id = request.path_params["credential_id"]
    cred = await _get(request, credential_id)
    await authorize(request, rule, _target(cred))
    if cred is None:
        raise NotFound(f"Could not find credential: {credential_id}.")
    return cred


async def show_credential(request: Request) -> Response:
    cred = await _authorized_credential(request, "identity:get_credential")
    return json({"credential": render_credential(request, cred)})


async def update_credential(request: Request) -> Response:
    data = _section(await json_body(request))
    body = validate(CredentialUpdate, data)
    if not data:
        raise BadRequest("Invalid input for field 'credential': at least one attribute.")
    cred = await _authorized_credential(request, "identity:update_credential")
    if "id" in data and data["id"] != cred.id:
        raise BadRequest("Cannot change the ID of a credential.")
    fields = body.model_fields_set
    new_user = body.user_id if "user_id" in fields and body.user_id else cred.user_id
    if new_user != cred.user_id:
        # Handing a credential to another user needs the right to create one for them.
        await authorize(
            request, "identity:create_credential", {"credential": {"user_id": new_user}}
        )
    identity = identity_of(request)
    new_type = body.type if "type" in fields and body.type else cred.type
    new_project = body.project_id if "project_id" in fields else cred.project_id
    blob = body.blob if "blob" in fields and body.blob is not None else None
    access = None
    if is_ec2(new_type):
        if not new_project:
            raise _missing("project_id")
        new_data = ec2_blob(blob if blob is not None else decrypt_blob(identity, cred))
        if is_ec2(cred.type):
            old = jsonlib.loads(decrypt_blob(identity, cred))
            # The delegation it carries stays fixed (Keystone lets the access key change:
            # the id stays, and the key is found by its column here).
            for key in ("trust_id", "app_cred_id", "access_token_id", "access_id"):
                if old.get(key) != new_data.get(key):
                    raise BadRequest(f"{key} can not be updated for credential")
        access = new_data["access"]
    try:
        async with identity.write() as session:
            row = await session.get(Credential, cred.id)
            if row is None:
                raise NotFound(f"Could not find credential: {cred.id}.")
            if new_user != row.user_id and await session.get(User, new_user) is None:
                raise NotFound(f"Could not find user: {new_user}.")
            row.user_id, row.type, row.project_id = new_user, new_type, new_project
            row.access_key = access
            if blob is not None:
                row.encrypted_blob = encrypt_blob(identity, blob)
            if extras := _extras(body):
                row.extra = {**(row.extra or {}), **extras}
    except IntegrityError:
        raise Conflict(
            "Conflict occurred attempting to store credential - the access key is in use."
        ) from None
    return json({"credential": render_credential(request, row)})


async def delete_credential(request: Request) -> Response:
    cred = await _authorized_credential(request, "identity:delete_credential")
    await _remove(request, cred)
    return no_content()


# -- /v3/users/{user_id}/credentials/OS-EC2 (api-ref: OS-EC2) ---------------------


def render_ec2(request: Request, cred: Credential) -> dict[str, Any]:
    blob = jsonlib.loads(decrypt_blob(identity_of(request), cred))
    return {
        "user_id": cred.user_id,
        "tenant_id": cred.project_id,
        "access": blob.get("access"),
        "secret": blob.get("secret"),
        "trust_id": blob.get("trust_id"),
        "links": {
            "self": f"{base_url(request)}/v3/users/{cred.user_id}/credentials/OS-EC2/"
            f"{blob.get('access')}"
        },
    }


async def _require_user(request: Request, user_id: str) -> None:
    async with identity_of(request).read() as session:
        if await session.get(User, user_id) is None:
            raise NotFound(f"Could not find user: {user_id}.")


async def create_ec2(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    data = await json_body(request)
    ctx = await authorize(request, "identity:ec2_create_credential", {"user": {"id": user_id}})
    tenant_id = data.get("tenant_id") if isinstance(data, dict) else None
    if not isinstance(tenant_id, str) or not tenant_id:
        raise BadRequest("Invalid input for field 'tenant_id': a project id is required.")
    await _refuse_ec2_derived(request, ctx)
    await _require_user(request, user_id)
    async with identity_of(request).read() as session:
        if await session.get(Project, tenant_id) is None:
            raise NotFound(f"Could not find project: {tenant_id}.")
    blob: dict[str, Any] = {
        "access": secrets.token_hex(16),
        "secret": secrets.token_hex(16),
        "trust_id": None,
    }
    if ctx.app_cred_id:
        blob["app_cred_id"] = ctx.app_cred_id
    cred = Credential(
        id=credential_id_for(blob["access"]),
        user_id=user_id,
        project_id=tenant_id,
        type=EC2,
        encrypted_blob=encrypt_blob(identity_of(request), jsonlib.dumps(blob)),
        access_key=blob["access"],
        extra={},
    )
    await _store(request, cred)
    return json({"credential": render_ec2(request, cred)}, status=201)


async def list_ec2(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    await authorize(request, "identity:ec2_list_credentials", {"user": {"id": user_id}})
    await _require_user(request, user_id)
    async with identity_of(request).read() as session:
        rows = (
            await session.scalars(
                select(Credential)
                .where(Credential.user_id == user_id, Credential.access_key.is_not(None))
                .order_by(Credential.id)
            )
        ).all()
    items = [render_ec2(request, c) for c in rows if is_ec2(c.type)]
    return json(list_body(request, "credentials", items))


async def _ec2_of_path(request: Request, rule: str) -> Credential:
    """The user's ec2 credential named by access key; the policy sees its real owner."""
    user_id, access = request.path_params["user_id"], request.path_params["access"]
    async with identity_of(request).read() as session:
        cred = await session.scalar(select(Credential).where(Credential.access_key == access))
    owner = cred.user_id if cred is not None else user_id
    await authorize(request, rule, {"user": {"id": owner}})
    if cred is None or cred.user_id != user_id or not is_ec2(cred.type):
        raise NotFound(f"Could not find credential: {credential_id_for(access)}.")
    return cred


async def show_ec2(request: Request) -> Response:
    cred = await _ec2_of_path(request, "identity:ec2_get_credential")
    return json({"credential": render_ec2(request, cred)})


async def delete_ec2(request: Request) -> Response:
    cred = await _ec2_of_path(request, "identity:ec2_delete_credential")
    await _remove(request, cred)
    return no_content()


# -- /v3/ec2tokens and /v3/s3tokens: a signed request for a token -----------------


def _refuse(message: str, reason: str | None = None) -> Unauthorized:
    LOG.info("EC2/S3 authentication refused: %s", reason or message)
    return Unauthorized(message)


async def _signed_credentials(request: Request) -> dict[str, Any]:
    data = await json_body(request)
    if not isinstance(data, dict) or not data:
        raise BadRequest("request must include a request body")
    # Keystone has accepted all three names over the years.
    creds = data.get("credentials") or data.get("credential") or data.get("ec2Credentials") or {}
    if not isinstance(creds, dict):
        raise BadRequest("Invalid input for field 'credentials': an object is required.")
    if not isinstance(creds.get("access"), str):
        raise _refuse("EC2 Signature not supplied")
    for name in ("params", "headers"):
        if not isinstance(creds.get(name) or {}, dict):
            raise BadRequest(f"Invalid input for field 'credentials.{name}'.")
    return creds


def _check_fresh(creds: dict[str, Any]) -> None:
    try:
        signed_at = ec2_signature.request_timestamp(creds)
    except ec2_signature.SignatureError as exc:
        raise _refuse(str(exc)) from None
    if signed_at is None:
        return
    now = datetime.now(UTC)
    if now > signed_at + AUTH_TTL:
        raise _refuse("Credential is expired")
    if signed_at > now + AUTH_TTL:
        raise _refuse("Credential timestamp is in the future")


async def _token_for_signed_request(request: Request, verify) -> Response:
    """Find the ec2 credential, check the signature with its secret, issue a project token."""
    identity = identity_of(request)
    creds = await _signed_credentials(request)
    async with identity.read() as session:
        cred = await session.scalar(
            select(Credential).where(Credential.access_key == creds["access"])
        )
    if cred is None or not is_ec2(cred.type):
        raise _refuse("EC2 access key not found.")
    blob = jsonlib.loads(decrypt_blob(identity, cred))
    secret = blob.get("secret")
    if not isinstance(secret, str) or not secret:
        raise _refuse("Invalid EC2 signature.", f"credential {cred.id} has no secret")
    try:
        valid = verify(secret, creds)
    except ec2_signature.SignatureError as exc:
        raise _refuse(str(exc)) from None
    if not valid:
        raise _refuse("Invalid EC2 signature.", f"signature mismatch for credential {cred.id}")
    _check_fresh(creds)
    if blob.get("trust_id") or blob.get("access_token_id"):
        raise _refuse("Trusts and OAuth1 delegation are not supported by this cloud.")
    app_cred = None
    if blob.get("app_cred_id"):
        async with identity.read() as session:
            app_cred = await session.get(ApplicationCredential, blob["app_cred_id"])
        if app_cred is None or app_cred.user_id != cred.user_id:
            raise _refuse("The application credential of this EC2 credential was deleted.")
        if app_cred.project_id != cred.project_id:
            raise _refuse(
                "EC2 credential project does not match the application credential project."
            )
    # The token body rendering refuses a disabled user or project and a user without roles.
    token, body = await identity.issue_token(
        cred.user_id, (EC2_METHOD,), SCOPE_PROJECT, cred.project_id, app_cred=app_cred
    )
    return json({"token": body}, headers={"X-Subject-Token": token})


async def ec2_tokens(request: Request) -> Response:
    """POST /v3/ec2tokens: EC2 Query API signatures, version 2 or 4."""
    return await _token_for_signed_request(request, ec2_signature.verify_ec2)


async def s3_tokens(request: Request) -> Response:
    """POST /v3/s3tokens: the S3 front end sends the string to sign (base64) and signature."""
    return await _token_for_signed_request(request, ec2_signature.verify_s3)


routes = [
    Route("/v3/credentials", create_credential, methods=["POST"]),
    Route("/v3/credentials", list_credentials, methods=["GET"]),
    Route("/v3/credentials/{credential_id}", show_credential, methods=["GET"]),
    Route("/v3/credentials/{credential_id}", update_credential, methods=["PATCH"]),
    Route("/v3/credentials/{credential_id}", delete_credential, methods=["DELETE"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2", create_ec2, methods=["POST"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2", list_ec2, methods=["GET"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", show_ec2, methods=["GET"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", delete_ec2, methods=["DELETE"]),
    Route("/v3/ec2tokens", ec2_tokens, methods=["POST"]),
    Route("/v3/s3tokens", s3_tokens, methods=["POST"]),
]

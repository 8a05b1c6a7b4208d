"""What every Swift handler shares: the service, the caller's rights, metadata headers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import ApiError
from cumulo.object_store.acl import account_acl_level, container_acl_allows
from cumulo.object_store.constraints import MAX_ACCOUNT_NAME_LENGTH, check_name, title
from cumulo.object_store.core import ObjectStore
from cumulo.object_store.errors import SwiftError


def store_of(request: Request) -> ObjectStore:
    return request.app.state.object_store


def empty(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    """A body-less answer as Swift gives it (text/html, Content-Length 0)."""
    return Response(
        b"",
        status_code=status,
        headers={
            "Content-Type": "text/html; charset=UTF-8",
            **(headers or {}),
        },
    )


# Where an account keeps its X-Account-Access-Control (system metadata: never set or
# shown as such, as Swift's `core-access-control`).
ACCOUNT_ACL_SYSMETA = "X-Account-Sysmeta-Core-Access-Control"

# Swift's swift_owner_headers: only owners set them, only owners are shown them.
OWNER_HEADERS = frozenset(
    {
        "X-Container-Read",
        "X-Container-Write",
        "X-Container-Sync-Key",
        "X-Container-Sync-To",
        "X-Account-Meta-Temp-Url-Key",
        "X-Account-Meta-Temp-Url-Key-2",
        "X-Container-Meta-Temp-Url-Key",
        "X-Container-Meta-Temp-Url-Key-2",
        "X-Account-Access-Control",
    }
)


@dataclass
class Caller:
    ctx: RequestContext | None
    owner: bool  # may do anything in the account (operator, reseller admin, ACL admin)
    reseller_admin: bool = False
    # A temp URL's rights: its owner's, in this container only (a link out reads as anyone).
    container_scope: str | None = None
    # What the account's ACL grants a non-owner: "read-only", "read-write" or None.
    account_access: str | None = None

    @property
    def identity(self) -> RequestContext | None:
        return self.ctx

    @property
    def reads_account(self) -> bool:
        """May list the account and read every container and object in it."""
        return self.owner or self.account_access in ("read-only", "read-write")

    @property
    def writes_account(self) -> bool:
        """May also create, change and delete its containers and objects."""
        return self.owner or self.account_access == "read-write"


async def caller_for(request: Request, account: str) -> Caller:
    """Swift's keystoneauth: the account's project members with an operator role own it;
    the reseller admin role owns every account; others get only what ACLs grant."""
    store = store_of(request)
    check_name("Account", account, MAX_ACCOUNT_NAME_LENGTH)
    ctx = None
    if request.headers.get("x-auth-token"):
        try:
            ctx = await request_context(request)
        except ApiError as exc:
            if exc.status == 401:
                raise SwiftError(401) from None
            raise
    if ctx is None:
        return Caller(None, False)
    roles = {r.lower() for r in ctx.roles}
    if store.config.reseller_admin_role.lower() in roles:
        return Caller(ctx, True, True)
    prefix = store.config.reseller_prefix
    owns = account.startswith(prefix) and account[len(prefix) :] == ctx.project_id
    operator = bool(roles & {r.lower() for r in store.config.operator_roles})
    if owns and operator:
        return Caller(ctx, True)
    if not account.startswith(prefix):  # reserved accounts have no ACL
        return Caller(ctx, False)
    level = account_acl_level(await account_acl(store, account), ctx)
    # An ACL admin is a swift_owner: anything the owner may do, the ACL included.
    return Caller(ctx, level == "admin", account_access=level if level != "admin" else None)


async def account_acl(store: ObjectStore, account: str) -> str:
    """The account's stored X-Account-Access-Control ("" when none)."""
    info = await store.proxy.account_info(account, cached=True)
    value, _timestamp = ((info or {}).get("metadata") or {}).get(ACCOUNT_ACL_SYSMETA, ("", ""))
    return value


def deny(caller: Caller) -> SwiftError:
    return SwiftError(403) if caller.ctx is not None else SwiftError(401)


def require_owner(caller: Caller) -> None:
    if not caller.owner:
        raise deny(caller)


def require_account_writer(caller: Caller) -> None:
    """Container PUT, POST and DELETE: the owner, or a read-write account ACL grantee."""
    if not caller.writes_account:
        raise deny(caller)


def acl_allows(
    caller: Caller, acl: str | None, request: Request, *, listing: bool = False, write: bool = False
) -> bool:
    """Whether the account's ACL, or else the container's (acl), lets this caller read
    (or list, or write) a container that is not theirs."""
    if caller.writes_account if write else caller.reads_account:
        return True
    referrer = request.headers.get("referer", "")
    return container_acl_allows(acl, caller.ctx, referrer, listing=listing, write=write)


def without_owner_headers(caller: Caller, headers: dict[str, str]) -> dict[str, str]:
    """What a non-owner may set or see of these headers (Swift drops the others)."""
    if caller.owner:
        return headers
    return {k: v for k, v in headers.items() if k not in OWNER_HEADERS}


def metadata_updates(request: Request, target: str, extra: tuple[str, ...] = ()) -> dict:
    """x-<target>-meta-* (and the extra system headers) to set, x-remove-* to clear
    (an empty value clears too)."""
    updates: dict[str, str] = {}
    prefix = f"x-{target}-meta-"
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith(prefix) or lower in extra:
            updates[title(lower)] = value.strip()
        elif lower.startswith("x-remove-"):
            rest = lower[len("x-remove-") :]
            if rest.startswith(f"{target}-meta-") or rest in {e[2:] for e in extra}:
                updates[title("x-" + rest)] = ""
    return updates

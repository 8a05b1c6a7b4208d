"""The Identity service's core: token issue, validation and revocation, with caches.

The API modules parse requests and call in here; other in-process services
validate tokens here too (through the same HTTP-shaped body), so there is one
token path. Every write goes through `Identity.write()`, which bumps a revision
and drops the caches, so a revoked token or a disabled user is refused at once.

What the caches hold (each for at most `cache_time` seconds and until the next write):
validated tokens, the scope part of token bodies (user, project, roles: what a
token's payload does not carry), the catalog, the revocation events, and whatever
the API memoizes (scope resolution). A value read while a write was committing is
never kept: a cache only takes values computed from the generation it is still at.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import MultiFernet
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.config import CumuloConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import NotFound, Unauthorized
from cumulo.common.policy import Policy
from cumulo.identity import assignments
from cumulo.identity.endpoint_filter import project_endpoint_ids
from cumulo.identity.models import (
    ApplicationCredential,
    Domain,
    Endpoint,
    Project,
    Region,
    RevocationEvent,
    Service,
    User,
)
from cumulo.identity.policies import IDENTITY_RULES
from cumulo.identity.security_compliance import password_expiry_text
from cumulo.identity.tokens import (
    SCOPE_DOMAIN,
    SCOPE_PROJECT,
    SCOPE_SYSTEM,
    KeyRepository,
    TokenFormatter,
    TokenPayload,
    random_audit_id,
)

DEFAULT_DOMAIN_ID = "default"
_CACHE_MAX = 50_000

T = TypeVar("T")


def isotime(ts: float | datetime | None) -> str | None:
    """Keystone's timestamp format: 2015-11-05T22:00:11.000000Z."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        ts = ts.replace(tzinfo=UTC).timestamp()
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InvalidToken(Unauthorized):
    default_message = "The request you have made requires authentication."


class _Cache:
    """A bounded map whose entries live `ttl` seconds, all dropped by `clear()`.

    `put` takes the generation read before the value was computed, and keeps the
    value only if no `clear()` (a write) happened meanwhile.
    """

    def __init__(self, ttl: float, max_entries: int = _CACHE_MAX) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        if generation != self.generation or self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            # Oldest first (dicts keep insertion order): drop a quarter at once.
            for old in list(itertools.islice(self._entries, self.max_entries // 4)):
                del self._entries[old]
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Identity:
    def __init__(self, config: CumuloConfig, state_dir: Path, db: Database) -> None:
        self.config = config
        self.state_dir = state_dir
        self.db = db
        self.keys = KeyRepository(state_dir / "fernet-keys", config.identity.max_active_keys)
        self.credential_keys = KeyRepository(
            state_dir / "credential-keys", config.identity.max_active_keys
        )
        self.formatter = TokenFormatter(self.keys)
        self.credential_fernet: MultiFernet = self.credential_keys.load()
        self.policy = Policy(IDENTITY_RULES, state_dir / config.policy_file)
        self.revision = 0
        ttl = config.identity.cache_time
        # token -> (payload, body without catalog)
        self._tokens = _Cache(ttl)
        # (user, scope, scope id, app cred) -> the parts of a token body the payload lacks
        self._scopes = _Cache(ttl, 10_000)
        # catalog, revocation events, and what the API modules memoize
        self._memo = _Cache(ttl, 10_000)
        # In-process listeners (other services' token caches) told about every change.
        self.invalidation_listeners: list[Callable[[], None]] = []

    # -- writes ---------------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.db.write() as session:
                yield session
        finally:
            self.invalidate()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.db.read() as session:
            yield session

    def invalidate(self) -> None:
        self.revision += 1
        self._tokens.clear()
        self._scopes.clear()
        self._memo.clear()
        for listener in self.invalidation_listeners:
            listener()

    def reload_keys(self) -> None:
        self.formatter.reload()
        self.credential_fernet = self.credential_keys.load()
        self.invalidate()

    async def memoize(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """What `compute()` returns (never None), kept until the next write or cache_time.

        For values read from the identity data only, so that a write makes them stale.
        """
        value = self._memo.get(key)
        if value is None:
            generation = self._memo.generation
            value = await compute()
            self._memo.put(key, value, generation)
        return value

    # -- issue ----------------------------------------------------------------

    async def issue_token(
        self,
        user_id: str,
        methods: tuple[str, ...],
        scope: int,
        scope_id: str | None,
        *,
        parent: TokenPayload | None = None,
        app_cred: ApplicationCredential | None = None,
        include_catalog: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        now = time.time()
        expires_at = now + self.config.identity.token_expiration
        audit_ids: tuple[str, ...] = (random_audit_id(),)
        if parent is not None:
            # A token made from a token never outlives it and shares its audit chain.
            expires_at = min(expires_at, parent.expires_at)
            audit_ids = (audit_ids[0], parent.audit_ids[-1])
        if app_cred is not None and app_cred.expires_at is not None:
            expires_at = min(expires_at, app_cred.expires_at.replace(tzinfo=UTC).timestamp())
        payload = TokenPayload(
            user_id=user_id,
            methods=methods,
            expires_at=expires_at,
            issued_at=now,
            audit_ids=audit_ids,
            scope=scope,
            scope_id=scope_id,
            app_cred_id=app_cred.id if app_cred else None,
        )
        generation = self._tokens.generation
        body = await self._render(payload)
        token = self.formatter.create(payload)
        # Services validate a token soon after it is issued: it starts cached.
        self._tokens.put(token, (payload, body), generation)
        if include_catalog:
            body = {**body, "catalog": await self.catalog_for(body)}
        return token, body

    # -- validate -------------------------------------------------------------

    async def context(self, token: str, req_id: str = "-") -> RequestContext:
        """The caller behind a token (the same shape other services get over HTTP)."""
        _, body = await self.validate(token)
        return RequestContext.from_token(token, body, req_id)

    def parse_token(self, token: str) -> TokenPayload:
        try:
            return self.formatter.parse(token)
        except ValueError:
            raise InvalidToken("The token is not valid.") from None

    async def validate(
        self, token: str, *, allow_expired: bool = False
    ) -> tuple[TokenPayload, dict[str, Any]]:
        """The payload and token body (without catalog), or 401/404 for a bad token.

        The body is shared with the cache: callers copy it before changing it.
        """
        cached = self._tokens.get(token)
        if cached is not None:
            payload, body = cached
        else:
            generation = self._tokens.generation
            payload = self.parse_token(token)
            if await self._is_revoked(payload):
                raise InvalidToken("The token has been revoked.")
            body = await self._render(payload)
            self._tokens.put(token, (payload, body), generation)
        now = time.time()
        if payload.expires_at <= now:
            window = self.config.identity.allow_expired_window
            if not allow_expired or payload.expires_at + window <= now:
                raise InvalidToken("The token has expired.")
        return payload, body

    async def _render(self, p: TokenPayload) -> dict[str, Any]:
        """The Identity v3 token body for a payload; refuses what is no longer valid."""
        key = (p.user_id, p.scope, p.scope_id, p.app_cred_id)
        parts = self._scopes.get(key)
        if parts is None:
            generation = self._scopes.generation
            async with self.read() as session:
                parts = await self._read_scope(session, p)
            self._scopes.put(key, parts, generation)
        return {
            "methods": list(p.methods),
            "audit_ids": list(p.audit_ids),
            "expires_at": isotime(p.expires_at),
            "issued_at": isotime(p.issued_at),
            **parts,
        }

    async def _read_scope(self, session: AsyncSession, p: TokenPayload) -> dict[str, Any]:
        """User, scope, roles and application credential of a token body, from the database."""
        user = await session.get(User, p.user_id)
        if user is None or not user.enabled:
            raise InvalidToken("The user of this token is unknown or disabled.")
        user_domain = await session.get(Domain, user.domain_id)
        if user_domain is None or not user_domain.enabled:
            raise InvalidToken("The domain of this token's user is disabled.")
        body: dict[str, Any] = {
            "user": {
                "domain": {"id": user_domain.id, "name": user_domain.name},
                "id": user.id,
                "name": user.name,
                "password_expires_at": password_expiry_text(user.password_expires_at),
            },
        }
        role_ids: set[str] | None = None
        if p.scope == SCOPE_PROJECT:
            project = await session.get(Project, p.scope_id)
            if project is None or not project.enabled:
                raise InvalidToken("The project of this token is unknown or disabled.")
            domain = await session.get(Domain, project.domain_id)
            if domain is None or not domain.enabled:
                raise InvalidToken("The domain of this token's project is disabled.")
            role_ids = await assignments.roles_on_project(session, user.id, project)
            body["project"] = {
                "domain": {"id": domain.id, "name": domain.name},
                "id": project.id,
                "name": project.name,
            }
            body["is_domain"] = False
            body["is_admin_project"] = (
                project.name == self.config.identity.admin_project
                and project.domain_id == DEFAULT_DOMAIN_ID
            )
        elif p.scope == SCOPE_DOMAIN:
            domain = await session.get(Domain, p.scope_id)
            if domain is None or not domain.enabled:
                raise InvalidToken("The domain of this token is unknown or disabled.")
            role_ids = await assignments.roles_on_domain(session, user.id, domain.id)
            body["domain"] = {"id": domain.id, "name": domain.name}
        elif p.scope == SCOPE_SYSTEM:
            role_ids = await assignments.roles_on_system(session, user.id)
            body["system"] = {"all": True}
        if p.app_cred_id is not None:
            cred = await session.get(ApplicationCredential, p.app_cred_id)
            if cred is None or cred.user_id != user.id:
                raise InvalidToken("The application credential of this token was deleted.")
            if role_ids is not None:
                granted = await assignments.expand_implied(session, set(cred.role_ids))
                role_ids &= granted
            body["application_credential"] = {
                "id": cred.id,
                "name": cred.name,
                "restricted": not cred.unrestricted,
            }
        if role_ids is not None:
            if not role_ids:
                raise InvalidToken("The user has no role on the scope of this token.")
            body["roles"] = await assignments.role_refs(session, role_ids)
        return body

    # -- revoke ---------------------------------------------------------------

    async def revoke(self, payload: TokenPayload) -> None:
        async with self.write() as session:
            session.add(RevocationEvent(audit_id=payload.audit_ids[0], issued_before=utcnow()))

    async def revoke_user_tokens(self, session: AsyncSession, user_id: str) -> None:
        """Revoke every token the user holds now (password change, disable)."""
        session.add(RevocationEvent(user_id=user_id, issued_before=utcnow()))

    async def _is_revoked(self, p: TokenPayload) -> bool:
        events = await self._revocation_events()
        chain = p.audit_ids[-1]
        for ev in (
            events.get(p.audit_ids[0], ()) + events.get(chain, ()) + events.get(p.user_id, ())
        ):
            if ev.issued_before.replace(tzinfo=UTC).timestamp() < p.issued_at:
                continue
            if ev.audit_id and ev.audit_id != p.audit_ids[0]:
                continue
            if ev.audit_chain_id and ev.audit_chain_id != chain:
                continue
            if ev.user_id and ev.user_id != p.user_id:
                continue
            if ev.project_id and ev.project_id != p.project_id:
                continue
            return True
        return False

    async def _revocation_events(self) -> dict[str, tuple[RevocationEvent, ...]]:
        """Live revocation events indexed by what they match (audit id, chain, user)."""
        return await self.memoize("revocation events", self._read_revocation_events)

    async def _read_revocation_events(self) -> dict[str, tuple[RevocationEvent, ...]]:
        # Events older than the longest token lifetime can match nothing any more.
        horizon = utcnow().timestamp() - (
            self.config.identity.token_expiration + self.config.identity.allow_expired_window
        )
        async with self.read() as session:
            rows = await session.scalars(
                select(RevocationEvent).where(
                    RevocationEvent.revoked_at
                    >= datetime.fromtimestamp(horizon, UTC).replace(tzinfo=None)
                )
            )
            index: dict[str, list[RevocationEvent]] = {}
            for ev in rows:
                key = ev.audit_id or ev.audit_chain_id or ev.user_id or ""
                index.setdefault(key, []).append(ev)
        return {k: tuple(v) for k, v in index.items()}

    async def prune_revocations(self) -> int:
        horizon = time.time() - (
            self.config.identity.token_expiration + self.config.identity.allow_expired_window
        )
        cutoff = datetime.fromtimestamp(horizon, UTC).replace(tzinfo=None)
        async with self.write() as session:
            result = await session.execute(
                delete(RevocationEvent).where(RevocationEvent.revoked_at < cutoff)
            )
        return result.rowcount or 0

    # -- catalog --------------------------------------------------------------

    async def catalog(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """The service catalog, as a project's tokens show it (shared: callers must not
        change it). OS-EP-FILTER associations narrow a project's catalog."""
        full = await self.memoize("catalog", self._read_catalog)
        if project_id is None:
            return full

        async def read_filter() -> tuple[bool, frozenset[str]]:
            async with self.read() as session:
                ids = await project_endpoint_ids(session, project_id)
            return ids is not None, frozenset(ids or ())

        filtered, ids = await self.memoize(("project endpoints", project_id), read_filter)
        if not filtered:
            return full
        narrowed = [
            {**service, "endpoints": [e for e in service["endpoints"] if e["id"] in ids]}
            for service in full
        ]
        return [service for service in narrowed if service["endpoints"]]

    async def catalog_for(self, token_body: dict[str, Any]) -> list[dict[str, Any]]:
        """The catalog as a token shows it: endpoint URLs with `$(project_id)s` (or
        `%(tenant_id)s`, `$(user_id)s`) filled in from the token, as Keystone does;
        an endpoint whose URL names what the token lacks (an unscoped token's
        project) is left out; OS-EP-FILTER associations narrow a project's catalog."""
        project_id = (token_body.get("project") or {}).get("id")
        catalog = await self.catalog(project_id)
        if not any("(" in ep["url"] for s in catalog for ep in s["endpoints"]):
            return catalog
        user_id = (token_body.get("user") or {}).get("id")
        values = {"user_id": user_id}
        if project_id:
            values |= {"project_id": project_id, "tenant_id": project_id}
        return [
            {
                **service,
                "endpoints": [
                    {**ep, "url": url}
                    for ep in service["endpoints"]
                    if (url := format_endpoint_url(ep["url"], values)) is not None
                ],
            }
            for service in catalog
        ]

    async def _read_catalog(self) -> list[dict[str, Any]]:
        async with self.read() as session:
            services = (
                await session.scalars(select(Service).where(Service.enabled).order_by(Service.type))
            ).all()
            endpoints = (await session.scalars(select(Endpoint).where(Endpoint.enabled))).all()
        by_service: dict[str, list[dict[str, Any]]] = {}
        for ep in endpoints:
            by_service.setdefault(ep.service_id, []).append(
                {
                    "id": ep.id,
                    "interface": ep.interface,
                    "region": ep.region_id,
                    "region_id": ep.region_id,
                    "url": ep.url,
                }
            )
        return [
            {
                "endpoints": by_service.get(s.id, []),
                "id": s.id,
                "type": s.type,
                "name": s.name,
            }
            for s in services
        ]

    async def region_exists(self, session: AsyncSession, region_id: str) -> bool:
        return await session.get(Region, region_id) is not None

    # -- lookups the API modules share ------------------------------------------

    async def get_domain(self, session: AsyncSession, domain_id: str) -> Domain:
        domain = await session.get(Domain, domain_id)
        if domain is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        return domain


def format_endpoint_url(url: str, values: dict[str, Any]) -> str | None:
    """Keystone's endpoint URL templates: `$(name)s` or `%(name)s`; None when the
    template names a value that is missing."""
    try:
        return url.replace("$(", "%(") % values
    except (KeyError, TypeError, ValueError):
        return None

"""Which query parameters each Compute API takes, and from which microversion it refuses
the others (Nova's query schemas with `additionalProperties: False`).

Nova ignored unknown query parameters until 2.75, which refused them on the APIs that
had filters (flavors, keypairs, limits, migrations, quota sets, server groups, services,
volumes...); 2.102 refuses them on every other API that has a query schema (show of a
server, a flavor, an aggregate...). The server list and its detail take unknown filters
at every microversion (Nova keeps them ignored). The table is checked before routing by
`QueryParamsMiddleware`, so a handler never sees a parameter it does not know.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cumulo.common.faults import BadRequest
from cumulo.compute.api.wire import reject_unknown

# (method, path) -> [(microversion from which unknown parameters are refused, the known)]
# The last entry whose microversion the request reaches applies.
_STRICT: dict[tuple[str, str], list[tuple[tuple[int, int], frozenset[str]]]] = {}


def _strict(methods: str, paths: str, *steps: tuple[tuple[int, int], set[str]]) -> None:
    for method in methods.split():
        for path in paths.split():
            _STRICT[(method, "/v2.1" + path)] = [(v, frozenset(k)) for v, k in steps]


V2_75, V2_102 = (2, 75), (2, 102)
NONE: set[str] = set()

_strict("GET", "/os-aggregates /os-aggregates/{aggregate_id}", (V2_102, NONE))
_strict("DELETE", "/os-assisted-volume-snapshots/{snapshot_id}", (V2_75, {"delete_info"}))
_strict(
    "GET",
    "/servers/{server_id}/os-interface /servers/{server_id}/os-interface/{port_id}",
    (V2_102, NONE),
)
_strict("GET", "/os-availability-zone /os-availability-zone/detail", (V2_102, NONE))
_strict("GET", "/extensions /extensions/{alias}", (V2_102, NONE))
_FLAVOR_FILTERS = {"is_public", "limit", "marker", "minDisk", "minRam", "sort_dir", "sort_key"}
_strict(
    "GET",
    "/flavors /flavors/detail",
    (V2_75, _FLAVOR_FILTERS),
    (V2_102, _FLAVOR_FILTERS | {"name"}),
)
_strict(
    "GET",
    "/flavors/{flavor_id} /flavors/{flavor_id}/os-flavor-access "
    "/flavors/{flavor_id}/os-extra_specs /flavors/{flavor_id}/os-extra_specs/{key}",
    (V2_102, NONE),
)
_strict("GET", "/os-floating-ip-pools", (V2_102, NONE))
_strict(
    "GET",
    "/os-hypervisors /os-hypervisors/detail",
    ((2, 53), {"hypervisor_hostname_pattern", "limit", "marker", "with_servers"}),
)
_strict("GET", "/os-hypervisors/{hypervisor_id}", ((2, 53), {"with_servers"}))
_strict(
    "GET",
    "/servers/{server_id}/os-instance-actions",
    ((2, 58), {"changes-since", "limit", "marker"}),
    ((2, 66), {"changes-before", "changes-since", "limit", "marker"}),
)
_strict("GET", "/servers/{server_id}/os-instance-actions/{request_id}", (V2_102, NONE))
_strict("GET", "/os-instance_usage_audit_log /os-instance_usage_audit_log/{before}", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/ips /servers/{server_id}/ips/{network}", (V2_102, NONE))
_strict("GET", "/os-keypairs", (V2_75, {"limit", "marker", "user_id"}))
_strict("GET DELETE", "/os-keypairs/{name}", (V2_75, {"user_id"}))
_strict("GET", "/limits", (V2_75, {"tenant_id"}))
_MIGRATION_FILTERS = {"hidden", "host", "instance_uuid", "migration_type", "source_compute"}
_MIGRATION_FILTERS |= {"status", "changes-since", "limit", "marker"}
_strict(
    "GET",
    "/os-migrations",
    ((2, 59), _MIGRATION_FILTERS),
    ((2, 66), _MIGRATION_FILTERS | {"changes-before"}),
    ((2, 80), _MIGRATION_FILTERS | {"changes-before", "project_id", "user_id"}),
)
_strict(
    "GET PUT DELETE", "/os-quota-sets/{project_id} /os-quota-sets/{project_id}/detail",
    (V2_75, {"user_id"}),
)  # fmt: skip
_strict("GET", "/os-quota-sets/{project_id}/defaults", (V2_102, NONE))
_strict("GET", "/os-quota-class-sets/{class_name}", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/os-security-groups", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/diagnostics", (V2_102, NONE))
_strict("GET", "/os-server-groups", (V2_75, {"all_projects", "limit", "offset"}))
_strict("GET", "/os-server-groups/{group_id}", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/metadata /servers/{server_id}/metadata/{key}", (V2_102, NONE))
_strict(
    "GET",
    "/servers/{server_id}/migrations /servers/{server_id}/migrations/{migration_id}",
    (V2_102, NONE),
)
_strict("GET", "/servers/{server_id}/os-server-password", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/tags /servers/{server_id}/tags/{tag}", (V2_102, NONE))
_strict("GET", "/servers/{server_id} /os-volumes_boot/{server_id}", (V2_102, NONE))
_strict("GET", "/os-services", (V2_75, {"binary", "host"}))
_strict("GET", "/os-console-auth-tokens/{console_token}", ((2, 99), NONE))
_strict(
    "GET", "/servers/{server_id}/shares /servers/{server_id}/shares/{share_id}", ((2, 97), NONE)
)
_strict(
    "GET",
    "/os-simple-tenant-usage",
    (V2_75, {"start", "end", "detailed", "limit", "marker"}),
)
_strict("GET", "/os-simple-tenant-usage/{tenant_id}", (V2_75, {"start", "end", "limit", "marker"}))
_strict("GET", "/os-snapshots/{id}", (V2_102, NONE))
_strict("GET", "/servers/{server_id}/os-volume_attachments", (V2_75, {"limit", "offset"}))
_strict("GET", "/servers/{server_id}/os-volume_attachments/{volume_id}", (V2_102, NONE))
_strict("GET", "/os-volumes", (V2_75, {"limit", "offset"}))
_strict("GET", "/os-volumes/detail", (V2_102, {"limit", "offset"}))
_strict("GET", "/os-volumes/{id}", (V2_102, NONE))


def known_params(method: str, path: str, version: tuple[int, int]) -> frozenset[str] | None:
    """The query parameters (method, route path) takes at `version`; None: any."""
    known = None
    for since, names in _STRICT.get((method, path), ()):
        if version >= since:
            known = names
    return known


def check_query(method: str, path: str, version: tuple[int, int], query: str) -> None:
    """400 (Nova's message) when the query names a parameter the API does not take."""
    known = known_params(method, path, version)
    if known is None or not query:
        return
    reject_unknown(dict(parse_qsl(query, keep_blank_values=True)), set(known))


class QueryParamsMiddleware:
    """Refuses, before the handler, a query parameter the API does not take at the
    negotiated microversion (inside MicroversionMiddleware, which negotiated it)."""

    def __init__(self, app: ASGIApp, routes: list[Any], render_error: Any) -> None:
        self.app = app
        self.routes = [r for r in routes if isinstance(r, Route)]  # in the app's order
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"")
        # Without a token the handler answers 401 first, as Nova's pipeline does.
        if scope["type"] == "http" and query and _has_token(scope):
            for route in self.routes:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    negotiated = scope.get("compute.version")
                    version = (negotiated.major, negotiated.minor) if negotiated else (2, 1)
                    try:
                        check_query(scope["method"], route.path, version, query.decode())
                    except BadRequest as exc:
                        await self.render_error(400, exc.message, scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def _has_token(scope: Scope) -> bool:
    return any(k.lower() == b"x-auth-token" for k, _ in scope.get("headers", ()))

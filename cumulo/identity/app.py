"""The Identity (Keystone v3) ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette

from cumulo.common.app import create_app
from cumulo.common.faults import render_identity
from cumulo.identity.api import (
    access_rules,
    application_credentials,
    assignments,
    auth,
    catalog,
    credentials,
    domain_config,
    domains,
    endpoint_filter,
    enrolment,
    groups,
    oauth1,
    policies,
    projects,
    roles,
    trusts,
    users,
    versions,
)
from cumulo.identity.audit import AuditMiddleware
from cumulo.identity.core import Identity


def create_identity_app(identity: Identity) -> Starlette:
    routes = [
        *versions.routes,
        *auth.routes,
        *domain_config.routes,
        *domains.routes,
        *projects.routes,
        *users.routes,
        *groups.routes,
        *roles.routes,
        *assignments.routes,
        *catalog.routes,
        *application_credentials.routes,
        *access_rules.routes,
        *credentials.routes,
        *policies.routes,
        *oauth1.routes,
        *endpoint_filter.routes,
        *trusts.routes,
        *enrolment.routes,
    ]
    app = create_app("identity", routes, render_identity)
    app.add_middleware(AuditMiddleware, notifier_of=lambda: identity.notifier)
    app.state.identity = identity
    app.state.token_validator = identity
    return app

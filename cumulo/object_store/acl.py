"""Swift's ACLs as cumulo's keystoneauth reads them.

Container ACLs (X-Container-Read / X-Container-Write), elements comma separated:
`.r:<referrer>` (`.r:*` anyone, `.r:.example.com` a domain, `.r:-host` a refusal),
`.rlistings` (referrers may list too), `<project>:<user>` by id or name (names only for
callers of the default domain) with `*` for either, or a role name the caller has in the project.

Account ACLs (X-Account-Access-Control), Swift's "V2" JSON syntax as tempauth has it:
`{"admin": [...], "read-write": [...], "read-only": [...]}`, each a list of grantees:
`<project>:<user>` as in container ACLs, or a lone project or user (`<p>` is `<p>:*`
or `*:<p>`; `*` is `*:*`).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

from cumulo.common.context import RequestContext

DEFAULT_DOMAIN = "default"

# Strongest first: a caller named at several levels gets the strongest.
ACCOUNT_ACL_LEVELS = ("admin", "read-write", "read-only")


def parse_acl(acl: str | None) -> tuple[list[str], list[str], bool]:
    """(referrers, grants, rlistings)."""
    referrers, grants, listings = [], [], False
    for item in (acl or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item == ".rlistings":
            listings = True
        elif item.startswith((".r:", ".ref:", ".referer:", ".referrer:")):
            referrers.append(item.split(":", 1)[1])
        else:
            grants.append(item)
    return referrers, grants, listings


def referrer_allowed(referrer: str, allowed: list[str]) -> bool:
    host = urlparse(referrer).hostname or ""
    result = False
    for rule in allowed:
        deny = rule.startswith("-")
        rule = rule[1:] if deny else rule
        if rule == "*" or host == rule or (rule.startswith(".") and host.endswith(rule)):
            result = not deny
    return result


def identity_matches(ctx: RequestContext, project: str, user: str) -> bool:
    """A `<project>:<user>` grantee (ids or names, `*` for either) names this caller.
    Names count only when the caller's user and project are in the default domain (as
    Swift's keystoneauth: a same-named project of another domain is someone else)."""
    projects, users = {ctx.project_id, "*"}, {ctx.user_id, "*"}
    if ctx.user_domain_id == DEFAULT_DOMAIN and ctx.project_domain_id == DEFAULT_DOMAIN:
        projects.add(ctx.project_name)
        users.add(ctx.user_name)
    return project in projects - {None} and user in users - {None}


def grant_matches(ctx: RequestContext, grants: list[str]) -> bool:
    """A container ACL's grants: `<project>:<user>`, or a role name the caller holds."""
    for grant in grants:
        if ":" in grant:
            if identity_matches(ctx, *grant.split(":", 1)):
                return True
        elif grant in ctx.roles:
            return True
    return False


def container_acl_allows(
    acl: str | None,
    ctx: RequestContext | None,
    referrer: str,
    *,
    listing: bool = False,
    write: bool = False,
) -> bool:
    """Referrer rules grant reads only (never writes); grants need a token."""
    referrers, grants, listings = parse_acl(acl)
    if not write and referrer_allowed(referrer, referrers) and (listings or not listing):
        return True
    return ctx is not None and grant_matches(ctx, grants)


class AccountAclInvalid(ValueError):
    """An X-Account-Access-Control value that is not an account ACL (why, for the 400)."""


def parse_account_acl(value: str) -> dict[str, list[str]]:
    """An X-Account-Access-Control value, checked as tempauth checks it: a JSON object
    whose keys are the three levels and whose values are lists of strings ("" is none)."""
    if not value.strip():
        return {}
    try:
        acl = json.loads(value)
    except ValueError:
        acl = None
    if not isinstance(acl, dict):
        raise AccountAclInvalid(f"Syntax error in input ({value!r})")
    for key, grantees in acl.items():
        if key not in ACCOUNT_ACL_LEVELS:
            raise AccountAclInvalid(f"Key {json.dumps(key)} not recognized")
        if not isinstance(grantees, list):
            raise AccountAclInvalid(f"Value for key {json.dumps(key)} must be a list")
        if not all(isinstance(g, str) for g in grantees):
            raise AccountAclInvalid(f"Elements of {json.dumps(key)} list must be strings")
    return acl


def format_account_acl(acl: dict[str, list[str]]) -> str:
    """Swift's V2 form: ASCII JSON, sorted keys, no spaces ("" when nobody is named)."""
    if not any(acl.values()):
        return ""
    return json.dumps(acl, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def _account_grantee_matches(ctx: RequestContext, grantee: str) -> bool:
    if ":" in grantee:
        return identity_matches(ctx, *grantee.split(":", 1))
    # A lone id stands for a whole project or a user in any project.
    return identity_matches(ctx, grantee, "*") or identity_matches(ctx, "*", grantee)


def account_acl_level(stored: str, ctx: RequestContext | None) -> str | None:
    """The strongest level the account's stored ACL grants this caller (None: none;
    anonymous callers are never named). A stored value that no longer parses grants
    nothing, as in Swift."""
    if ctx is None or not stored:
        return None
    try:
        acl = parse_account_acl(stored)
    except AccountAclInvalid:
        return None
    for level in ACCOUNT_ACL_LEVELS:
        if any(_account_grantee_matches(ctx, g) for g in acl.get(level, [])):
            return level
    return None

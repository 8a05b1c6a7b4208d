"""Container ACLs (X-Container-Read / X-Container-Write) as Swift's keystoneauth reads them.

Elements, comma separated: `.r:<referrer>` (`.r:*` anyone, `.r:.example.com` a domain,
`.r:-host` a refusal), `.rlistings` (referrers may list too), `<project>:<user>` by id
or name with `*` for either, or a role name the caller has in the project.
"""

from __future__ import annotations

from urllib.parse import urlparse

from cumulo.common.context import RequestContext


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


def grant_matches(ctx: RequestContext, grants: list[str]) -> bool:
    projects = {ctx.project_id, ctx.project_name, "*"} - {None}
    users = {ctx.user_id, ctx.user_name, "*"} - {None}
    for grant in grants:
        if ":" in grant:
            project, user = grant.split(":", 1)
            if project in projects and user in users and (project, user) != ("*", "*"):
                return True
            if (project, user) == ("*", "*"):
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

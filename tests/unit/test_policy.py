"""The Identity RBAC defaults, checked for each kind of caller, and policy file overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cumulo.common.context import RequestContext
from cumulo.common.faults import Forbidden
from cumulo.common.policy import Policy
from cumulo.identity.policies import IDENTITY_RULES

D1, D2 = "domain-one", "domain-two"
P1, P2 = "project-one", "project-two"
# admin implies manager implies member implies reader
ADMIN_ROLES = frozenset({"admin", "manager", "member", "reader"})


def _context(user_id: str, roles: frozenset[str], **scope: Any) -> RequestContext:
    return RequestContext(
        auth_token="token",
        user_id=user_id,
        user_name=user_id,
        user_domain_id=D1,
        user_domain_name=D1,
        roles=roles,
        expires_at="2099-01-01T00:00:00.000000Z",
        **scope,
    )


CLOUD_ADMIN = _context(
    "cloud-admin",
    ADMIN_ROLES,
    project_id="admin-project",
    project_domain_id="default",
    is_admin_project=True,
)
SYSTEM_ADMIN = _context("system-admin", ADMIN_ROLES, system_scope="all")
SYSTEM_READER = _context("system-reader", frozenset({"reader"}), system_scope="all")
DOMAIN_ADMIN = _context("domain-admin", ADMIN_ROLES, domain_id=D1)
# The admin role on an ordinary project does not make a cloud admin.
PROJECT_ADMIN = _context("project-admin", ADMIN_ROLES, project_id=P1, project_domain_id=D1)
MEMBER = _context("member", frozenset({"member", "reader"}), project_id=P1, project_domain_id=D1)
READER = _context("reader", frozenset({"reader"}), project_id=P1, project_domain_id=D1)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(IDENTITY_RULES)


def allowed(policy: Policy, rule: str, ctx: RequestContext, target: dict | None = None) -> bool:
    # The API passes the target both whole (as "target") and flattened, as authorize() does.
    target = target or {}
    return policy.check(rule, ctx, {"target": target, **target})


def project(project_id: str, domain_id: str) -> dict:
    return {"project": {"id": project_id, "domain_id": domain_id}}


def user(user_id: str, domain_id: str) -> dict:
    return {"user": {"id": user_id, "domain_id": domain_id}}


@pytest.mark.parametrize("ctx", [CLOUD_ADMIN, SYSTEM_ADMIN], ids=["admin-project", "system"])
def test_cloud_admin_may_do_anything_anywhere(policy: Policy, ctx: RequestContext):
    assert allowed(policy, "identity:create_domain", ctx)
    assert allowed(policy, "identity:list_domains", ctx)
    assert allowed(policy, "identity:create_project", ctx, project("new", D2))
    assert allowed(policy, "identity:delete_project", ctx, project(P2, D2))
    assert allowed(policy, "identity:get_project", ctx, project(P2, D2))
    assert allowed(policy, "identity:list_projects", ctx, {"domain_id": None})
    assert allowed(policy, "identity:list_users", ctx, {"domain_id": None})
    assert allowed(policy, "identity:create_user", ctx, user("u", D2))
    assert allowed(policy, "identity:create_role", ctx)
    assert allowed(policy, "identity:create_endpoint", ctx)
    assert allowed(policy, "identity:validate_token", ctx, {"token": {"user_id": "someone"}})
    assert allowed(policy, "identity:revoke_token", ctx, {"token": {"user_id": "someone"}})


def test_admin_of_an_ordinary_project_is_not_a_cloud_admin(policy: Policy):
    assert not allowed(policy, "identity:create_domain", PROJECT_ADMIN)
    assert not allowed(policy, "identity:list_domains", PROJECT_ADMIN)
    assert not allowed(policy, "identity:create_project", PROJECT_ADMIN, project("new", D1))
    assert not allowed(policy, "identity:list_users", PROJECT_ADMIN, {"domain_id": None})
    assert not allowed(policy, "identity:create_role", PROJECT_ADMIN)
    assert not allowed(policy, "identity:get_project", PROJECT_ADMIN, project(P2, D2))


def test_domain_admin_manages_only_their_domain(policy: Policy):
    ctx = DOMAIN_ADMIN
    assert allowed(policy, "identity:create_project", ctx, project("new", D1))
    assert allowed(policy, "identity:update_project", ctx, project(P1, D1))
    assert allowed(policy, "identity:get_project", ctx, project(P1, D1))
    assert allowed(policy, "identity:list_projects", ctx, {"domain_id": D1})
    assert allowed(policy, "identity:list_users", ctx, {"domain_id": D1})
    assert allowed(policy, "identity:create_user", ctx, user("u", D1))
    assert allowed(policy, "identity:create_grant", ctx, project(P1, D1))
    assert allowed(policy, "identity:get_domain", ctx, {"domain": {"id": D1}})

    assert not allowed(policy, "identity:create_project", ctx, project("new", D2))
    assert not allowed(policy, "identity:delete_project", ctx, project(P2, D2))
    assert not allowed(policy, "identity:get_project", ctx, project(P2, D2))
    assert not allowed(policy, "identity:list_projects", ctx, {"domain_id": D2})
    assert not allowed(policy, "identity:list_projects", ctx, {"domain_id": None})
    assert not allowed(policy, "identity:list_users", ctx, {"domain_id": D2})
    assert not allowed(policy, "identity:create_user", ctx, user("u", D2))
    assert not allowed(policy, "identity:create_grant", ctx, project(P2, D2))
    assert not allowed(policy, "identity:get_domain", ctx, {"domain": {"id": D2}})
    assert not allowed(policy, "identity:list_domains", ctx)
    assert not allowed(policy, "identity:create_domain", ctx)
    assert not allowed(policy, "identity:create_role", ctx)


@pytest.mark.parametrize("ctx", [MEMBER, READER], ids=["member", "reader"])
def test_project_users_see_their_project_and_themselves_only(policy: Policy, ctx: RequestContext):
    assert allowed(policy, "identity:get_project", ctx, project(P1, D1))
    assert allowed(policy, "identity:get_user", ctx, user(ctx.user_id, D1))
    assert allowed(policy, "identity:list_user_projects", ctx, user(ctx.user_id, D1))
    assert allowed(policy, "identity:change_password", ctx, user(ctx.user_id, D1))
    assert allowed(policy, "identity:revoke_token", ctx, {"token": {"user_id": ctx.user_id}})
    assert allowed(policy, "identity:get_domain", ctx, {"domain": {"id": D1}})
    assert allowed(policy, "identity:list_regions", ctx)

    assert not allowed(policy, "identity:get_project", ctx, project(P2, D1))
    assert not allowed(policy, "identity:get_user", ctx, user("someone-else", D1))
    assert not allowed(policy, "identity:change_password", ctx, user("someone-else", D1))
    assert not allowed(policy, "identity:revoke_token", ctx, {"token": {"user_id": "other"}})
    assert not allowed(policy, "identity:validate_token", ctx, {"token": {"user_id": "other"}})
    assert not allowed(policy, "identity:list_projects", ctx, {"domain_id": None})
    assert not allowed(policy, "identity:list_projects", ctx, {"domain_id": D1})
    assert not allowed(policy, "identity:list_users", ctx, {"domain_id": None})
    assert not allowed(policy, "identity:create_project", ctx, project("new", D1))
    assert not allowed(policy, "identity:update_project", ctx, project(P1, D1))
    assert not allowed(policy, "identity:delete_project", ctx, project(P1, D1))
    assert not allowed(policy, "identity:create_grant", ctx, project(P1, D1))
    assert not allowed(policy, "identity:get_domain", ctx, {"domain": {"id": D2}})
    assert not allowed(policy, "identity:list_services", ctx)


def test_system_reader_reads_everything_and_changes_nothing(policy: Policy):
    ctx = SYSTEM_READER
    assert allowed(policy, "identity:list_users", ctx, {"domain_id": None})
    assert allowed(policy, "identity:list_projects", ctx, {"domain_id": D2})
    assert allowed(policy, "identity:get_project", ctx, project(P2, D2))
    assert allowed(policy, "identity:list_domains", ctx)
    assert allowed(policy, "identity:list_role_assignments", ctx, {"domain_id": None})
    assert not allowed(policy, "identity:create_project", ctx, project("new", D1))
    assert not allowed(policy, "identity:delete_user", ctx, user("u", D1))
    assert not allowed(policy, "identity:create_domain", ctx)


def test_missing_target_fields_deny_rather_than_match_none(policy: Policy):
    # A domain admin asking without a domain filter gets nothing cloud-wide.
    assert not allowed(policy, "identity:list_users", DOMAIN_ADMIN, {"domain_id": None})
    assert not allowed(policy, "identity:list_users", DOMAIN_ADMIN, {})
    assert not allowed(policy, "identity:create_project", DOMAIN_ADMIN, {"project": {"id": "x"}})
    # A project-scoped caller has no domain_id: a None in the target must not equal it.
    assert not allowed(policy, "identity:list_users", READER, {"domain_id": None})


def test_enforce_raises_forbidden_naming_the_rule(policy: Policy):
    with pytest.raises(Forbidden, match="identity:create_domain"):
        policy.enforce("identity:create_domain", MEMBER, {"target": {}})


def test_unknown_rule_is_a_programming_error(policy: Policy):
    with pytest.raises(KeyError):
        policy.check("identity:no_such_rule", CLOUD_ADMIN)


def test_policy_file_in_the_state_dir_overrides_a_rule(tmp_path: Path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "# let project members create projects in their domain; nobody lists domains\n"
        '"identity:create_project": "rule:cloud_admin or role:member"\n'
        '"identity:list_domains": "!"\n'
    )
    overridden = Policy(IDENTITY_RULES, policy_file)
    assert allowed(overridden, "identity:create_project", MEMBER, project("new", D1))
    assert not allowed(overridden, "identity:create_project", READER, project("new", D1))
    assert not allowed(overridden, "identity:list_domains", CLOUD_ADMIN)
    # Rules the file does not name keep their defaults.
    assert allowed(overridden, "identity:create_domain", CLOUD_ADMIN)
    assert not allowed(overridden, "identity:list_users", MEMBER, {"domain_id": None})


def test_a_missing_policy_file_means_the_defaults(tmp_path: Path):
    defaults = Policy(IDENTITY_RULES, tmp_path / "absent.yaml")
    assert allowed(defaults, "identity:list_domains", CLOUD_ADMIN)
    assert not allowed(defaults, "identity:create_project", MEMBER, project("new", D1))

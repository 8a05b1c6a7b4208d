"""The request context: who is calling, in which scope, with which roles.

Built from a validated token body (the Identity v3 `token` object), so it is the
same whether the token was validated in-process or over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestContext:
    auth_token: str
    user_id: str
    user_name: str
    user_domain_id: str
    user_domain_name: str
    roles: frozenset[str]
    expires_at: str
    audit_ids: tuple[str, ...] = ()
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    project_domain_name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None
    system_scope: str | None = None
    is_admin_project: bool = False
    app_cred_id: str | None = None
    # The application credential's access rules ({service, path, method}): when any,
    # the token reaches only what they name.
    access_rules: tuple[dict[str, str], ...] = ()
    request_id: str = "-"

    @classmethod
    def from_token(
        cls, auth_token: str, token: dict[str, Any], request_id: str = "-"
    ) -> RequestContext:
        user = token["user"]
        project = token.get("project") or {}
        domain = token.get("domain") or {}
        system = token.get("system") or {}
        return cls(
            auth_token=auth_token,
            user_id=user["id"],
            user_name=user["name"],
            user_domain_id=user["domain"]["id"],
            user_domain_name=user["domain"]["name"],
            roles=frozenset(r["name"] for r in token.get("roles", ())),
            expires_at=token["expires_at"],
            audit_ids=tuple(token.get("audit_ids", ())),
            project_id=project.get("id"),
            project_name=project.get("name"),
            project_domain_id=(project.get("domain") or {}).get("id"),
            project_domain_name=(project.get("domain") or {}).get("name"),
            domain_id=domain.get("id"),
            domain_name=domain.get("name"),
            system_scope="all" if system.get("all") else None,
            is_admin_project=bool(token.get("is_admin_project", False)),
            app_cred_id=(token.get("application_credential") or {}).get("id"),
            access_rules=tuple((token.get("application_credential") or {}).get("access_rules", ())),
            request_id=request_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, carried with every message on the bus."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["roles"] = sorted(self.roles)
        data["audit_ids"] = list(self.audit_ids)
        data["access_rules"] = list(self.access_rules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["roles"] = frozenset(fields.get("roles", ()))
        fields["audit_ids"] = tuple(fields.get("audit_ids", ()))
        fields["access_rules"] = tuple(fields.get("access_rules", ()))
        return cls(**fields)

    def policy_credentials(self) -> dict[str, Any]:
        """The credentials oslo.policy checks rules against."""
        return {
            "user_id": self.user_id,
            "user_domain_id": self.user_domain_id,
            "project_id": self.project_id,
            "project_domain_id": self.project_domain_id,
            "domain_id": self.domain_id,
            "system_scope": self.system_scope,
            "roles": list(self.roles),
            "is_admin_project": self.is_admin_project,
        }

"""RBAC with oslo.policy: each service registers defaults; a YAML file may override any rule.

Base rules every service shares:
  cloud_admin    admin on the whole cloud: the admin role, system-scoped or in the admin project
  system_reader  reader (or more) with system scope
  project_member / project_reader   member / reader of the target project
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from cumulo.common.context import RequestContext
from cumulo.common.faults import Forbidden

BASE_RULES = {
    "cloud_admin": "(role:admin and system_scope:all) or (role:admin and is_admin_project:True)",
    "system_reader": "rule:cloud_admin or (role:reader and system_scope:all)",
    "project_member": "role:member and project_id:%(project_id)s",
    "project_reader": "role:reader and project_id:%(project_id)s",
    "admin_or_project_member": "rule:cloud_admin or rule:project_member",
    "admin_or_project_reader": "rule:system_reader or rule:project_reader",
}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif value is not None:
            # A missing value fails its check; None would compare equal to "None".
            flat[name] = value
    return flat


class Policy:
    """Evaluates named rules for a request context and a target."""

    def __init__(self, defaults: dict[str, str], policy_file: Path | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="cumulo", default_config_files=[], default_config_dirs=[])
        path = str(policy_file) if policy_file and policy_file.exists() else "/nonexistent"
        self._enforcer = oslo_policy.Enforcer(conf, policy_file=path)
        rules = {**BASE_RULES, **defaults}
        self._enforcer.register_defaults(
            [oslo_policy.RuleDefault(name, check) for name, check in rules.items()]
        )
        self._enforcer.load_rules()
        # Rules are loaded once; evaluating them directly skips a file check per call.
        self._rules = self._enforcer.rules

    def check(self, rule: str, ctx: RequestContext, target: dict[str, Any] | None = None) -> bool:
        check = self._rules.get(rule)
        if check is None:
            raise KeyError(f"no policy rule named {rule!r}")
        creds = {k: v for k, v in ctx.policy_credentials().items() if v is not None}
        return bool(check(_flatten(target or {}), creds, self._enforcer))

    def enforce(self, rule: str, ctx: RequestContext, target: dict[str, Any] | None = None) -> None:
        if not self.check(rule, ctx, target):
            raise Forbidden(f"You are not authorized to perform the requested action: {rule}.")

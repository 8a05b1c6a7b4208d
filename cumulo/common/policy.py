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

_MAX_DECISIONS = 20_000

BASE_RULES = {
    "cloud_admin": "(role:admin and system_scope:all) or (role:admin and is_admin_project:True)",
    "system_reader": "rule:cloud_admin or (role:reader and system_scope:all)",
    "project_manager": "role:manager and project_id:%(project_id)s",
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


def _frozen(d: dict[str, Any]) -> tuple:
    """A hashable form of flat credentials or target (TypeError if a value is not)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


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
        # A decision depends only on (rule, credentials, target), and the rules never
        # change while running: remember decisions (oslo.policy inspects every check's
        # signature on every call, which costs more than a request should).
        self._decisions: dict[tuple, bool] = {}

    def check(self, rule: str, ctx: RequestContext, target: dict[str, Any] | None = None) -> bool:
        check = self._rules.get(rule)
        if check is None:
            raise KeyError(f"no policy rule named {rule!r}")
        creds = {k: v for k, v in ctx.policy_credentials().items() if v is not None}
        flat = _flatten(target or {})
        try:
            key: tuple | None = (rule, _frozen(creds), _frozen(flat))
            decision = self._decisions.get(key)  # type: ignore[arg-type]
        except TypeError:
            key, decision = None, None
        if decision is None:
            decision = bool(check(flat, creds, self._enforcer))
            if key is not None:
                if len(self._decisions) >= _MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision

    def enforce(self, rule: str, ctx: RequestContext, target: dict[str, Any] | None = None) -> None:
        if not self.check(rule, ctx, target):
            raise Forbidden(f"You are not authorized to perform the requested action: {rule}.")

"""Every rule the Key Manager's handlers enforce has a default (a missing one is a 500)."""

from __future__ import annotations

import re
from pathlib import Path

import cumulo.key_manager.api as api_package
from cumulo.key_manager.policies import KEY_MANAGER_RULES

_RULE = re.compile(r'"([a-z_]+:[a-z_]+)"')


def test_every_rule_a_handler_names_has_a_default():
    named: set[str] = set()
    for module in Path(api_package.__file__).parent.glob("*.py"):
        named.update(_RULE.findall(module.read_text()))
    # The ACL handlers name theirs as f"{kind}_acls:{action}".
    named.update(
        f"{kind}_acls:{action}"
        for kind in ("secret", "container")
        for action in ("get", "put_patch", "delete")
    )
    assert named, "no rule found in the API modules"
    assert sorted(named - set(KEY_MANAGER_RULES)) == []

"""Application credential access rules: which requests a restricted token may make.

A rule names a service (catalog type), an HTTP method and a path pattern, as
keystonemiddleware matches them: `*` (or `{name}`) stands for one path segment,
`**` for any number of them.
"""

from __future__ import annotations

import re
from functools import lru_cache

# The catalog types each cumulo app answers for (what a rule's `service` names).
SERVICE_TYPES = {
    "identity": ("identity",),
    "compute": ("compute",),
    "image": ("image",),
    "network": ("network",),
    "volume": ("block-storage", "volumev3", "volume"),
    "metadata": (),
}

_TOKEN = re.compile(r"(?P<tag>\{[^}]*\})|(?P<rec_wild>\*\*)|(?P<wild>\*)|(?P<literal>[^{}*]+)")


@lru_cache(maxsize=1024)
def _pattern(path: str) -> re.Pattern[str]:
    regex = ""
    for match in _TOKEN.finditer(path):
        if match["tag"] or match["wild"]:
            regex += r"[^/]+"
        elif match["rec_wild"]:
            regex += ".*"
        else:
            regex += re.escape(match["literal"])
    return re.compile(f"^{regex}$")


def allows(rules: tuple[dict[str, str], ...], service: str, method: str, path: str) -> bool:
    """Whether one rule lets this app (`service`, cumulo's name) answer METHOD path."""
    types = SERVICE_TYPES.get(service, (service,))
    return any(
        rule.get("service") in types
        and rule.get("method") == method
        and _pattern(rule.get("path", "")).match(path) is not None
        for rule in rules
    )

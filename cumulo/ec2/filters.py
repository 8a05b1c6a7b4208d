"""EC2 `Filter.N.Name` / `Filter.N.Value.M`: values of one filter are ORed, filters are
ANDed, `*` and `?` are wildcards; `tag:<key>`, `tag-key` and `tag-value` match tags."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from cumulo.ec2.errors import Ec2Error

TAG_FILTERS = ("tag-key", "tag-value")


def check(filters: list[dict] | None, names: Iterable[str]) -> list[dict]:
    """The filters, refused when one has no name or one this resource does not know."""
    known = set(names) | set(TAG_FILTERS)
    for f in filters or []:
        name = f.get("Name")
        if not name or not isinstance(f.get("Values"), list) or not f["Values"]:
            raise Ec2Error(
                "InvalidParameterValue",
                f"The filter '{name}' is malformed: a filter needs a name and at least one value.",
            )
        if name not in known and not name.startswith("tag:"):
            raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
    return filters or []


def _pattern(value: str) -> re.Pattern:
    return re.compile(fnmatch.translate(value))


def _match_one(wanted: list[str], actual: Any) -> bool:
    actuals = actual if isinstance(actual, list | tuple | set) else [actual]
    texts = [_text(a) for a in actuals if a is not None]
    for value in wanted:
        if "*" in value or "?" in value:
            pattern = _pattern(value)
            if any(pattern.fullmatch(t) for t in texts):
                return True
        elif value in texts:
            return True
    return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(
    filters: list[dict], values: dict[str, Any], tags: dict[str, str] | None = None
) -> bool:
    tags = tags or {}
    for f in filters:
        name, wanted = f["Name"], [str(v) for v in f["Values"]]
        if name.startswith("tag:"):
            key = name[4:]
            ok = key in tags and _match_one(wanted, tags[key])
        elif name == "tag-key":
            ok = _match_one(wanted, list(tags))
        elif name == "tag-value":
            ok = _match_one(wanted, list(tags.values()))
        else:
            ok = _match_one(wanted, values.get(name))
        if not ok:
            return False
    return True

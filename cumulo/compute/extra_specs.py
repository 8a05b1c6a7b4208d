"""Flavor extra spec validation (2.86): the keys Nova knows, their values' rules.

The rules are data (extra_specs.yaml, read once). A key in none of the known
namespaces (`hw`, `quota`, `trait`, ...), or without a namespace, is left alone, as
Nova leaves it; a key in a known namespace must be a known spec with a valid value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_DATA = Path(__file__).with_name("extra_specs.yaml")
_TRUE = {"1", "t", "true", "on", "y", "yes"}
_FALSE = {"0", "f", "false", "off", "n", "no"}


class ExtraSpecInvalid(ValueError):
    """The message is Nova's, for a 400."""


@dataclass(frozen=True)
class KnownSpec:
    name: str  # as Nova documents it, e.g. hw:numa_cpus.{num}
    name_regex: re.Pattern[str]
    rule: dict[str, Any]  # type (int, str, bool) and enum / pattern / min / max

    def check(self, value: str) -> None:
        kind = self.rule["type"]
        if kind == "int":
            self._check_int(value)
        elif kind == "bool":
            if value.lower() not in _TRUE | _FALSE:
                raise ExtraSpecInvalid(
                    f"Validation failed; '{value}' is not a valid boolean-like value."
                )
        elif "pattern" in self.rule:
            if not re.fullmatch(self.rule["pattern"], value):
                raise ExtraSpecInvalid(
                    f"Validation failed; '{value}' is not of the format '{self.rule['pattern']}'."
                )
        elif "enum" in self.rule and value not in self.rule["enum"]:
            values = ", ".join(self.rule["enum"])
            raise ExtraSpecInvalid(f"Validation failed; '{value}' is not one of: {values}.")

    def _check_int(self, value: str) -> None:
        try:
            number = int(value)
        except ValueError:
            raise ExtraSpecInvalid(
                f"Validation failed; '{value}' is not a valid integer value."
            ) from None
        if "max" in self.rule and number > self.rule["max"]:
            raise ExtraSpecInvalid(
                f"Validation failed; '{value}' is greater than the max value "
                f"of '{self.rule['max']}'."
            )
        if "min" in self.rule and number < self.rule["min"]:
            raise ExtraSpecInvalid(
                f"Validation failed; '{value}' is less than the min value of '{self.rule['min']}'."
            )


@dataclass(frozen=True)
class Registry:
    by_name: dict[str, KnownSpec]  # in the data's order: the first matching spec rules
    namespaces: tuple[re.Pattern[str], ...]

    def validate(self, key: str, value: str) -> None:
        spec = self.by_name.get(key) or next(
            (s for s in self.by_name.values() if s.name_regex.fullmatch(key)), None
        )
        if spec is not None:
            spec.check(value)
            return
        namespace, colon, _ = key.partition(":")
        if colon and any(ns.fullmatch(namespace) for ns in self.namespaces):
            raise ExtraSpecInvalid(
                f"Validation failed; extra spec '{key}' does not appear to be a valid extra spec."
            )


def _name_regex(name: str, parameters: dict[str, str], lists: dict[str, list[str]]) -> str:
    """`hw:numa_cpus.{num}` with each {parameter} replaced by its pattern (a @list: any
    of its names), the rest literal."""
    parts = re.split(r"\{(\w+)\}", name)
    regex = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex.append(re.escape(part))
            continue
        pattern = parameters[part]
        if pattern.startswith("@"):
            pattern = "|".join(re.escape(item) for item in lists[pattern[1:]])
        regex.append(f"(?P<{part}>{pattern})")
    return "".join(regex)


@cache
def registry() -> Registry:
    data = yaml.safe_load(_DATA.read_text())
    lists = {k: v for k, v in data.items() if k != "specs"}
    by_name: dict[str, KnownSpec] = {}
    namespaces: dict[str, re.Pattern[str]] = {}
    for entry in data["specs"]:
        rule = {k: v for k, v in entry.items() if k not in ("name", "parameters", "deprecated")}
        regex = _name_regex(entry["name"], entry.get("parameters") or {}, lists)
        by_name[entry["name"]] = KnownSpec(entry["name"], re.compile(regex), rule)
        if ":" in entry["name"]:
            # The namespace: the name up to its first ':' (parameters and all).
            namespace = _name_regex(
                entry["name"].split(":", 1)[0], entry.get("parameters") or {}, lists
            )
            namespaces.setdefault(namespace, re.compile(namespace))
    return Registry(by_name, tuple(namespaces.values()))


def validate_extra_specs(specs: dict[str, str]) -> None:
    """Raise ExtraSpecInvalid for the first key of a known namespace that is unknown or
    has a bad value."""
    known = registry()
    for key, value in specs.items():
        known.validate(key, value)

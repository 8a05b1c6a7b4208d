"""Storage policies ("pools"): each an object ring of its own, chosen per container."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cumulo.common.config import StoragePolicyConfig
from cumulo.object_store.ring import Ring


def object_ring_name(index: int) -> str:
    return "object" if index == 0 else f"object-{index}"


@dataclass
class StoragePolicy:
    index: int
    name: str
    default: bool
    deprecated: bool
    ring: Ring


class PolicyError(ValueError):
    pass


class StoragePolicies:
    def __init__(
        self, configs: list[StoragePolicyConfig], rings_dir: Path, prefix: str, suffix: str
    ) -> None:
        defaults = [c for c in configs if c.default]
        if len({c.index for c in configs}) != len(configs):
            raise PolicyError("two storage policies have the same index")
        if len({c.name.lower() for c in configs}) != len(configs):
            raise PolicyError("two storage policies have the same name")
        if len(defaults) > 1:
            raise PolicyError("more than one default storage policy")
        self.by_index = {
            c.index: StoragePolicy(
                c.index,
                c.name,
                False,
                c.deprecated,
                Ring(rings_dir / f"{object_ring_name(c.index)}.ring.json", prefix, suffix),
            )
            for c in configs
        }
        chosen = defaults[0] if defaults else min(configs, key=lambda c: c.index)
        if chosen.deprecated:
            raise PolicyError("the default storage policy cannot be deprecated")
        self.default = self.by_index[chosen.index]
        self.default.default = True

    def by_name(self, name: str) -> StoragePolicy | None:
        return next(
            (p for p in self.by_index.values() if p.name.lower() == name.strip().lower()), None
        )

    def info(self) -> list[dict]:
        """The `policies` list of /info (deprecated policies are not shown)."""
        listed = []
        for p in sorted(self.by_index.values(), key=lambda p: p.index):
            if p.deprecated:
                continue
            entry = {"name": p.name, "aliases": p.name}
            if p.default:
                entry["default"] = True
            listed.append(entry)
        return listed

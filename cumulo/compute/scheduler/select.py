"""select_destinations: run the filters and weighers for each instance of a request."""

from __future__ import annotations

import logging
from itertools import compress, repeat

from cumulo.compute.scheduler.filters import DEFAULT_FILTERS, HostFilter
from cumulo.compute.scheduler.host_state import HostState, RequestSpec
from cumulo.compute.scheduler.weights import HostWeigher, best_host, default_weighers

LOG = logging.getLogger(__name__)


class NoValidHost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(f"No valid host was found. {reason}")


def filter_hosts(
    hosts: list[HostState], spec: RequestSpec, filters: list[HostFilter]
) -> list[HostState]:
    candidates = [h for h in hosts if h.host not in spec.ignore_hosts]
    if spec.force_hosts:
        forced = set(spec.force_hosts)
        candidates = [h for h in candidates if h.host in forced]
    for f in filters:
        # A filter with nothing to check for this request (no zone asked, no image
        # properties, no server group) is skipped rather than asked about every host.
        applies = getattr(f, "applies", None)
        if applies is not None and not applies(spec):
            continue
        before = len(candidates)
        candidates = list(compress(candidates, map(f.host_passes, candidates, repeat(spec))))
        if len(candidates) < before:
            LOG.debug("%s removed %d hosts", f.name, before - len(candidates))
        if not candidates:
            LOG.info("no host left after %s", f.name)
            break
    return candidates


def select_destinations(
    hosts: list[HostState],
    spec: RequestSpec,
    instance_uuids: list[str] | None = None,
    *,
    filters: list[HostFilter] | None = None,
    weighers: list[HostWeigher] | None = None,
) -> list[HostState]:
    """One host per instance, best first; each pick is consumed before the next.

    The caller claims the resources atomically afterwards; a failed claim means
    another request got there first, and the caller asks again.
    """
    filters = DEFAULT_FILTERS if filters is None else filters
    weighers = default_weighers() if weighers is None else weighers
    uuids = instance_uuids or [None] * spec.num_instances  # type: ignore[list-item]
    chosen: list[HostState] = []
    for uuid in uuids:
        candidates = filter_hosts(hosts, spec, filters)
        if not candidates:
            raise NoValidHost(
                f"There are not enough hosts available (placed {len(chosen)} of {len(uuids)})."
            )
        best = best_host(candidates, weighers)
        best.consume(spec, uuid)
        if spec.group_policy:
            spec.group_hosts.add(best.host)
        chosen.append(best)
    return chosen

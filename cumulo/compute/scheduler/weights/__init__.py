"""Host weighers: one per module. Each gives a raw value per host; values are normalized
to 0..1 across the candidates and multiplied by the weigher's multiplier (positive
spreads instances over hosts, negative stacks them), as Nova does."""

from __future__ import annotations

from itertools import repeat
from operator import add, mul, sub
from typing import Protocol

from cumulo.compute.scheduler.host_state import HostState
from cumulo.compute.scheduler.weights.cpu import CPUWeigher
from cumulo.compute.scheduler.weights.disk import DiskWeigher
from cumulo.compute.scheduler.weights.ram import RAMWeigher


class HostWeigher(Protocol):
    name: str
    multiplier: float

    def raw_weight(self, host: HostState) -> float: ...


def default_weighers(spread: bool = True) -> list[HostWeigher]:
    sign = 1.0 if spread else -1.0
    return [RAMWeigher(sign), CPUWeigher(sign), DiskWeigher(sign)]


def weigh(hosts: list[HostState], weighers: list[HostWeigher]) -> list[tuple[float, HostState]]:
    """(weight, host) pairs, heaviest first."""
    totals = [0.0] * len(hosts)
    for weigher in weighers:
        if not weigher.multiplier:
            continue
        raw = [weigher.raw_weight(h) for h in hosts]
        low, high = min(raw), max(raw)
        span = high - low
        if span == 0:
            continue
        for i, value in enumerate(raw):
            totals[i] += weigher.multiplier * (value - low) / span
    ranked = sorted(zip(totals, range(len(hosts)), strict=True), key=lambda t: -t[0])
    return [(weight, hosts[i]) for weight, i in ranked]


def best_host(hosts: list[HostState], weighers: list[HostWeigher]) -> HostState:
    """The heaviest host, as weigh() would rank it first (the first of equals), in one pass.

    The sum of normalized weights, multiplier * (value - low) / span, differs from
    sum(multiplier / span * value) by a constant: the same host is heaviest, without
    normalizing and sorting every host.
    """
    scores: list[float] | None = None
    for weigher in weighers:
        if not weigher.multiplier:
            continue
        raw = list(map(weigher.raw_weight, hosts))
        low, high = min(raw), max(raw)
        if high == low:
            continue
        scale = weigher.multiplier / (high - low)
        # scale * (value - low), added up per host (map keeps the loops in C).
        term = map(mul, map(sub, raw, repeat(low)), repeat(scale))
        scores = list(term) if scores is None else list(map(add, scores, term))
    if scores is None:
        return hosts[0]
    return hosts[max(range(len(hosts)), key=scores.__getitem__)]

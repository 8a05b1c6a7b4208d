"""The clients' status polls, made shorter for the test suite.

`openstack server create --wait` (osc_lib's wait_for_status) checks the server, then
sleeps 5 s before it looks again; openstacksdk's waits sleep 2 s. A fake-driver boot
takes a fraction of a second, so most of a test's `--wait` was sleeping. The test suite
polls every POLL_SECONDS instead, as a user could with a shorter interval: the clients
still poll the same API calls to the same states; only the pause between polls changes.
"""

from __future__ import annotations

import inspect

POLL_SECONDS = 0.5


def _set_default(function, name: str, value: float) -> None:
    """Change the default of one positional-or-keyword parameter of `function`."""
    with_defaults = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    defaults = list(function.__defaults__)
    defaults[with_defaults.index(name)] = value
    function.__defaults__ = tuple(defaults)


def shorten_sdk() -> None:
    from openstack import utils as sdk_utils

    original = sdk_utils.iterate_timeout
    if getattr(original, "shortened", False):
        return

    def iterate_timeout(timeout, message, wait=2):
        # The SDK's proxies pass their own interval (2 s): every wait goes through here.
        return original(timeout, message, min(2 if wait is None else wait, POLL_SECONDS))

    iterate_timeout.shortened = True
    sdk_utils.iterate_timeout = iterate_timeout


def shorten_cli() -> None:
    """osc_lib's waits (most of the CLI's `--wait`) and the SDK's (the rest)."""
    from osc_lib import utils as osc_utils

    for function in (osc_utils.wait_for_status, osc_utils.wait_for_delete):
        _set_default(function, "sleep_time", POLL_SECONDS)
    shorten_sdk()

"""Fixtures the functional tests share: openstacksdk connections to the session's cloud."""

from __future__ import annotations

import pytest

from tests.cloudrunner import CloudRunner


@pytest.fixture(scope="module")
def conn(cloud: CloudRunner):
    """The admin's connection."""
    return cloud.sdk()


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner):
    """The demo project member's connection."""
    return cloud.sdk("cumulo-demo")

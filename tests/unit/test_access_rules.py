"""Access rule matching as keystonemiddleware does it."""

from __future__ import annotations

from cumulo.common.access_rules import allows

IPS = ({"service": "compute", "method": "GET", "path": "/v2.1/servers/*/ips"},)


def test_star_is_one_segment_and_double_star_any():
    assert allows(IPS, "compute", "GET", "/v2.1/servers/abc/ips")
    assert not allows(IPS, "compute", "GET", "/v2.1/servers/a/b/ips")
    assert not allows(IPS, "compute", "GET", "/v2.1/servers//ips")
    deep = ({"service": "image", "method": "GET", "path": "/v2/images/**"},)
    assert allows(deep, "image", "GET", "/v2/images/x/file")
    tag = ({"service": "image", "method": "GET", "path": "/v2/images/{image_id}"},)
    assert allows(tag, "image", "GET", "/v2/images/x")


def test_service_method_and_literal_path_must_match():
    assert not allows(IPS, "network", "GET", "/v2.1/servers/abc/ips")
    assert not allows(IPS, "compute", "POST", "/v2.1/servers/abc/ips")
    assert not allows(IPS, "compute", "GET", "/v2.1/servers/abc/ipsx")
    dots = ({"service": "compute", "method": "GET", "path": "/v2.1/os-services.json"},)
    assert not allows(dots, "compute", "GET", "/v2.1/os-servicesXjson")
    volume = ({"service": "block-storage", "method": "GET", "path": "/v3/**"},)
    assert allows(volume, "volume", "GET", "/v3/p/volumes")

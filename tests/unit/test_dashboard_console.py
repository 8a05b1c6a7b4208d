"""The websocket the dashboard's own noVNC opens, from the console URL Compute answers."""

from __future__ import annotations

from cumulo.dashboard.pages.compute import console_websocket


def test_nova_s_path_parameter_names_the_websocket():
    url = "http://10.0.0.5:6080/vnc_lite.html?path=%3Ftoken%3Dabc-DEF_123"
    assert console_websocket(url) == "ws://10.0.0.5:6080/?token=abc-DEF_123"


def test_a_tls_proxy_gives_a_secure_websocket():
    url = "https://cloud.example:6080/vnc_lite.html?path=%3Ftoken%3Dxyz"
    assert console_websocket(url) == "wss://cloud.example:6080/?token=xyz"


def test_the_older_token_parameter_goes_to_websockify():
    # Nova's older form (vnc_auto.html?token=…): noVNC then opened /websockify?token=….
    url = "http://proxy:6080/vnc_auto.html?token=a%2Bb"
    assert console_websocket(url) == "ws://proxy:6080/websockify?token=a%2Bb"


def test_a_page_with_neither_opens_websockify():
    assert console_websocket("http://proxy:6080/vnc_lite.html") == "ws://proxy:6080/websockify"

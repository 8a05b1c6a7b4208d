"""The server's screen in the dashboard: a page of its own (noVNC, vendored, and
console.js) framed in the server page's Console panel while it is open, connected
through the noVNC proxy to the fake driver's VNC server, in Debian's chromium; a member
of another project gets no console of the server, and no other site frames it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.dashboard.web import HERE
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.e2e.test_dashboard import (  # noqa: F401 - the fixtures are used by name
    Browser,
    api_token,
    chromium_browser,
    close_tabs,
    compute,
    url,
)

pytestmark = pytest.mark.e2e

CAROL_PASSWORD = "carol-secret-pw"
NOVNC = "/static/vendor/novnc-rfb.min.js"
BUDGET = 100 * 1024  # issue 17: JavaScript per page, inflated


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, chromium_browser) -> Iterator[CloudRunner]:  # noqa: F811
    state = tmp_path_factory.mktemp("dashboard-console") / "state"
    configure_state_dir(state)
    runner = CloudRunner(state).start(60)
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def server(cloud: CloudRunner) -> str:
    """An ACTIVE server of the demo project."""
    disk = Path(cloud.state_dir) / "screen.raw"
    disk.write_bytes(b"\0" * 65536)
    image = cloud.openstack(
        "image", "create", "--public", "--disk-format", "raw", "--file", str(disk),
        "screen-image", "-f", "json",
    )["id"]  # fmt: skip
    token = api_token(cloud, "demo", cloud.config.identity.demo_password, "demo")
    with compute(cloud, token) as api:
        flavor = api.get("/flavors").json()["flavors"][0]["id"]
        created = api.post(
            "/servers",
            json={
                "server": {
                    "name": "with-a-screen",
                    "flavorRef": flavor,
                    "imageRef": image,
                    "networks": "none",
                }
            },
        )
        created.raise_for_status()
        server_id = created.json()["server"]["id"]
        deadline = time.monotonic() + 60
        while (status := api.get(f"/servers/{server_id}").json()["server"]["status"]) != "ACTIVE":
            assert status != "ERROR" and time.monotonic() < deadline, status
            time.sleep(0.3)
    return server_id


def _loaded(frame, path: str) -> bool:
    """Whether this document (a page or its frame) fetched the file at `path`."""
    return frame.evaluate(
        f"performance.getEntriesByType('resource').some(e => e.name.endsWith('{path}'))"
    )


def _open_console(page):
    """The Console panel opened, its frame's page connected to the guest's screen: the
    frame (a Playwright FrameLocator) and its page (a Frame)."""
    page.click("#vnc-panel summary")
    console = page.frame_locator("#vnc-frame")
    console.locator("#vnc[data-state=connected]").wait_for()
    return console, page.locator("#vnc-frame").element_handle().content_frame()


def test_the_console_panel_shows_the_server_s_screen(cloud, chromium_browser, server):  # noqa: F811
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    tab.login("demo", cloud.config.identity.demo_password)
    tab.go(f"/instances/{server}")
    assert page.locator("#vnc-frame").count() == 0  # no frame, no connection, until opened
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))

    console, frame = _open_console(page)
    # noVNC's 90 KB only in the frame, only for a user who opens the screen.
    assert _loaded(frame, NOVNC) and not _loaded(page, NOVNC)
    # The fake guest's screen (640x400, named after it) drawn in noVNC's canvas.
    canvas = console.locator("#vnc-screen canvas")
    assert canvas.count() == 1
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("640", "400")
    frame.wait_for_function(
        "document.getElementById('vnc-status').textContent.startsWith('Connected to cumulo')"
    )
    # The frame as wide as the panel, its page as high as the frame: neither scrolls.
    panel = page.locator("#vnc-panel").bounding_box()
    box = page.locator("#vnc-frame").bounding_box()
    assert box["width"] == panel["width"], (box, panel)
    assert frame.evaluate(
        "[document.documentElement.scrollHeight <= innerHeight,"
        " document.documentElement.scrollWidth <= innerWidth]"
    ) == [True, True]
    screen = console.locator("#vnc-screen").bounding_box()
    assert screen["y"] + screen["height"] <= box["y"] + box["height"] + 1, (screen, box)
    assert console.locator("#vnc-ctrl-alt-del").is_enabled()
    console.locator("#vnc-ctrl-alt-del").click()  # three key presses and releases
    page.wait_for_timeout(300)
    assert console.locator("#vnc").get_attribute("data-state") == "connected"
    tab.shot("instance-console")

    # Closing the panel takes the frame out, which disconnects; opening it again asks
    # for a new console.
    [vnc] = [s for s in sockets if f":{cloud.config.ports.novncproxy}/" in s.url]
    page.click("#vnc-panel summary")
    vnc.wait_for_event("close")
    assert page.locator("#vnc-frame").count() == 0
    console, frame = _open_console(page)

    # The full-screen link is still the noVNC proxy's own page, in a new tab.
    with tab.context.expect_page() as opened:
        console.locator("#vnc-console button").click()
    full = opened.value
    full.wait_for_load_state()
    port = cloud.config.ports.novncproxy
    assert f"127.0.0.1:{port}/vnc_lite.html?path=%3Ftoken%3D" in full.url
    full.close()
    tab.close()


def test_the_server_page_and_its_console_frame_each_load_under_100_kb_of_javascript(
    cloud,
    chromium_browser,  # noqa: F811
    server,
):
    """What the browser fetches of JavaScript, inflated, per page (issue 17's 100 KB):
    the server page (htmx and its two extensions, 66 KB, and the dashboard's scripts)
    loads nothing more when its console opens; the console's page in its frame loads
    console.js and noVNC's RFB class, without what the console never uses (90 KB;
    tools/build_novnc.mjs), and nothing of the server page's."""
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    tab.login("demo", cloud.config.identity.demo_password)
    page.route("**/*", lambda route: route.continue_())  # no HTTP cache: every body sent
    scripts = []
    page.on(
        "response", lambda r: scripts.append(r) if r.request.resource_type == "script" else None
    )
    tab.go(f"/instances/{server}")
    page.wait_for_load_state("networkidle")
    server_page = {r.url: len(r.body()) for r in scripts}
    # htmx, sse, idiomorph, live, session, console-panel
    assert len(server_page) == 6, sorted(server_page)

    _, frame = _open_console(page)
    page.wait_for_load_state("networkidle")
    in_page = {r.url: len(r.body()) for r in scripts if r.frame == page.main_frame}
    in_frame = {r.url: len(r.body()) for r in scripts if r.frame == frame}
    assert in_page == server_page and len(scripts) == len(in_page) + len(in_frame)
    base = url(cloud, "")
    assert sorted(in_frame) == [f"{base}/static/console.js", f"{base}{NOVNC}"], sorted(in_frame)
    assert in_frame[f"{base}{NOVNC}"] == (HERE / NOVNC[1:]).stat().st_size
    # The frame's document has no script of its own: the files are all of it.
    assert frame.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    print(f"server page: {sum(in_page.values())} bytes of JavaScript; "
          f"its console's frame: {sum(in_frame.values())}")  # fmt: skip
    assert sum(in_page.values()) <= BUDGET, in_page
    assert sum(in_frame.values()) <= BUDGET, in_frame
    tab.close()


def test_a_member_of_another_project_gets_no_console(cloud, chromium_browser, server):  # noqa: F811
    cloud.openstack("project", "create", "gamma")
    cloud.openstack("user", "create", "--password", CAROL_PASSWORD, "carol")
    cloud.openstack("role", "add", "--project", "gamma", "--user", "carol", "member")
    tab = Browser(chromium_browser, cloud)
    tab.login("carol", CAROL_PASSWORD)
    # The console's page: the API's 404, said in the page (the frame) alone.
    assert tab.go(f"/instances/{server}/console").status == 404
    assert "could not be found" in tab.page.inner_text("p[role=alert]")
    assert tab.page.locator("#vnc, header.top").count() == 0
    tab.go("/")
    csrf = tab.page.get_attribute("form.logout input[name=csrf_token]", "value")
    request = tab.context.request
    answer = request.post(
        url(cloud, f"/instances/{server}/console/websocket"), headers={"X-CSRF-Token": csrf}
    )
    assert answer.status == 404, answer.text()
    assert "could not be found" in answer.json()["error"]
    assert "websocket" not in answer.json()
    # Without the session's CSRF token: refused before Compute is asked.
    refused = request.post(url(cloud, f"/instances/{server}/console/websocket"))
    assert refused.status == 403
    tab.close(allow_http_errors=True)


def test_another_site_cannot_frame_the_console(cloud, chromium_browser, server):  # noqa: F811
    """X-Frame-Options SAMEORIGIN and CSP frame-ancestors 'self': the console's page
    (any dashboard page) shown in a frame of the dashboard's own pages only."""
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    tab.login("demo", cloud.config.identity.demo_password)
    console = url(cloud, f"/instances/{server}/console")
    page.route(
        "http://elsewhere.test/",
        lambda route: route.fulfill(
            content_type="text/html", body=f'<iframe id="decoy" src="{console}"></iframe>'
        ),
    )
    page.goto("http://elsewhere.test/")
    # The browser refused the dashboard's answer: its own error page in the frame.
    [_, decoy] = page.frames
    decoy.wait_for_url("chrome-error://chromewebdata/")
    assert page.frame_locator("#decoy").locator("main, #vnc").count() == 0
    tab.close()


def test_a_stopped_server_s_panel_says_why_and_connects_again_once_started(
    cloud,
    chromium_browser,  # noqa: F811
    server,
):
    token = api_token(cloud, "demo", cloud.config.identity.demo_password, "demo")
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    tab.login("demo", cloud.config.identity.demo_password)
    console = page.frame_locator("#vnc-frame")
    with compute(cloud, token) as api:
        api.post(f"/servers/{server}/action", json={"os-stop": None}).raise_for_status()
        tab.go(f"/instances/{server}")
        page.wait_for_selector("#server-status .badge:text('SHUTOFF')")
        page.click("#vnc-panel summary")
        console.locator("#vnc[data-state=failed]").wait_for()
        # Compute's 409 in the status line, with its request id.
        message = console.locator("#vnc-status").inner_text()
        assert "not ready for a console" in message and "(request req-" in message, message
        assert console.locator("#vnc-ctrl-alt-del").is_disabled()
        api.post(f"/servers/{server}/action", json={"os-start": None}).raise_for_status()
    page.wait_for_selector("#server-status .badge:text('ACTIVE')")
    console.locator("#vnc-reconnect").click()
    console.locator("#vnc[data-state=connected]").wait_for()
    assert console.locator("#vnc-reconnect").is_hidden()
    tab.close(allow_http_errors=True)  # the 409 of the first attempt


def test_the_console_frame_keeps_the_server_page_s_session(cloud, chromium_browser, server):  # noqa: F811
    """The server page keeps the session (session.js): typing in the console's frame is
    activity, so near the token's end the page renews it silently from its trust; and a
    session the console finds expired opens the page's renewal dialog, the frame saying
    so plainly."""
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    page.clock.install()  # the browser's clock: moved on below
    tab.login("demo", cloud.config.identity.demo_password)
    tab.go(f"/instances/{server}")
    console, _ = _open_console(page)
    page.clock.fast_forward("52:00")  # 8 minutes left, nobody active for 52
    page.wait_for_selector("#session-warning", state="visible")
    console.locator("#vnc-text").press_sequentially("still here")
    page.clock.fast_forward("00:06")  # the page's next look at the session
    page.wait_for_selector("#session-warning", state="hidden")
    assert not page.is_visible("#renew-dialog")

    # The console asked again, and its session found expired (the dashboard's answer
    # to a part of a page, HX-Trigger session-expired, played by the browser).
    page.route(
        "**/console/websocket",
        lambda route: route.fulfill(status=401, headers={"HX-Trigger": "session-expired"}),
    )
    page.click("#vnc-panel summary")
    page.click("#vnc-panel summary")
    console.locator("#vnc[data-state=failed]").wait_for()
    assert "renew it" in console.locator("#vnc-status").inner_text()
    page.wait_for_selector("#renew-dialog[open]")
    tab.close(allow_http_errors=True)  # the 401


def test_text_typed_into_the_screen_reaches_the_guest_and_view_only_sends_nothing(
    cloud,
    chromium_browser,  # noqa: F811
    server,
):
    """Keys reach the guest (the fake guest's text console logs each line typed on its
    screen, as a real one echoes it): from the keyboard on the screen, and from the
    "Type it" box; with "view only" nothing is sent. Text put on the guest's clipboard
    from one viewer reaches another viewer of the same guest."""
    tab = Browser(chromium_browser, cloud)
    page = tab.page
    tab.login("demo", cloud.config.identity.demo_password)
    tab.go(f"/instances/{server}")
    console, _ = _open_console(page)
    log = page.locator("#console-log")  # the server page's, outside the frame

    console.locator("#vnc-text").fill("echo Typed-In: $HOME\n")
    console.locator("#vnc-type").click()  # Shift around T, I, : and $ (US layout)
    log.filter(has_text="echo Typed-In: $HOME").wait_for(timeout=20000)

    # The keyboard on the screen itself (noVNC sends each key as the user presses it).
    console.locator("#vnc-screen canvas").click()
    page.keyboard.type("from the keyboard")
    page.keyboard.press("Enter")
    log.filter(has_text="from the keyboard").wait_for(timeout=20000)

    console.locator("#vnc-view-only").check()
    assert console.locator("#vnc-type").is_disabled()
    assert console.locator("#vnc-paste").is_disabled()
    assert console.locator("#vnc-ctrl-alt-del").is_disabled()
    console.locator("#vnc-screen canvas").click()
    page.keyboard.type("never sent")
    page.keyboard.press("Enter")
    console.locator("#vnc-view-only").uncheck()
    console.locator("#vnc-text").fill("after view only\n")
    console.locator("#vnc-type").click()
    log.filter(has_text="after view only").wait_for(timeout=20000)
    assert "never sent" not in log.inner_text()

    # A second viewer of the same guest sees what the first puts on its clipboard.
    other = Browser(chromium_browser, cloud)
    other.login("demo", cloud.config.identity.demo_password)
    other.go(f"/instances/{server}")
    other_console, _ = _open_console(other.page)
    console.locator("#vnc-text").fill("a shared secret")
    console.locator("#vnc-paste").click()
    other_console.locator("#vnc-clipboard:text('a shared secret')").wait_for()
    tab.shot("instance-console-keyboard")
    other.close()
    tab.close()

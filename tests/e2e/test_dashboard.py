"""The web dashboard in a real browser (Playwright for Python driving Debian's chromium,
never Playwright's own browser download), on an in-process cloud with the fake compute
driver: a new user's story, project isolation, and bad input.

Screenshots of the main pages go to tmp/artifacts/dashboard/ (not committed); every
page fails the test on a browser console error."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from cumulo.identity import totp
from tests.cloudrunner import CloudRunner, configure_state_dir, password_auth
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "dashboard"
BOB_PASSWORD = "bob-secret-pw"
ADMIN_PAGES = ("projects", "users", "groups", "roles", "quotas", "hypervisors", "services",
               "aggregates", "instances", "volumes", "flavors", "domains")  # fmt: skip
# A status page the browser reports as "Failed to load resource: ... status of 4xx":
# expected where a test provokes it (bad input), an error anywhere else.
HTTP_ERROR = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"the dashboard tests need Debian's chromium package ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the dashboard tests need playwright (the test extras)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, chromium_browser) -> Iterator[CloudRunner]:
    state = tmp_path_factory.mktemp("dashboard") / "state"
    configure_state_dir(state)
    config = load_config(state)
    config.compute.fake_spawn_delay = 3.0  # a BUILD the page can watch turn ACTIVE
    write_config(state, config)
    runner = CloudRunner(state).start(60)
    try:
        yield runner
    finally:
        runner.stop()


def url(runner: CloudRunner, path: str = "/") -> str:
    return f"http://127.0.0.1:{runner.config.ports.dashboard}{path}"


OPEN_TABS: list[Browser] = []


@pytest.fixture(autouse=True)
def close_tabs() -> Iterator[None]:
    """Tabs a failed test left open closed (their live streams would hold the cloud's stop)."""
    yield
    while OPEN_TABS:
        OPEN_TABS.pop().context.close()


class Browser:
    """One user's browser tab; console errors collected."""

    def __init__(self, browser, runner: CloudRunner) -> None:
        OPEN_TABS.append(self)
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.runner = runner
        self.errors: list[str] = []
        self.failed: list[str] = []  # resources answering an error status, for the message
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._on_response)

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} at {message.location['url']}")

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def go(self, path: str):
        return self.page.goto(url(self.runner, path))

    def login(self, user: str, password: str, passcode: str = "", ok: bool = True) -> None:
        self.go("/login")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", password)
        self.page.fill("input[name=passcode]", passcode)
        self.page.click("button[type=submit]")
        if ok:
            self.page.wait_for_url(url(self.runner, "/"))
        else:
            self.page.wait_for_selector("p[role=alert]")

    def reload_until(self, path: str, shown, tries: int = 60) -> None:
        """The page loaded again until `shown()` (what the volumes page does not follow
        live: a backend's work)."""
        for _ in range(tries):
            self.go(path)
            if shown():
                return
            self.page.wait_for_timeout(250)
        raise AssertionError(f"{path} never showed it")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self, allow_http_errors: bool = False) -> None:
        OPEN_TABS.remove(self)
        self.context.close()
        errors = [e for e in self.errors if not (allow_http_errors and HTTP_ERROR.search(e))]
        assert errors == [], f"browser console errors: {errors} (failed: {self.failed})"


def choose(page, select: str, text: str) -> None:
    """Select the option of `select` whose label starts with `text`."""
    options = page.locator(f"{select} option")
    labels = [options.nth(i).inner_text() for i in range(options.count())]
    label = next(label for label in labels if label.startswith(text))
    page.select_option(select, label=label)


def api_token(runner: CloudRunner, user: str, password: str, project: str) -> str:
    response = httpx.post(
        f"{runner.auth_url}/auth/tokens",
        json=password_auth(
            {"name": user, "domain": {"id": "default"}},
            password,
            {"project": {"name": project, "domain": {"id": "default"}}},
        ),
    )
    response.raise_for_status()
    return response.headers["X-Subject-Token"]


def compute(runner: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{runner.config.ports.compute}/v2.1",
        headers={"X-Auth-Token": token},
        timeout=30,
    )


def test_a_new_user_launches_watches_and_wires_a_server(dash, chromium_browser, tmp_path):
    demo_password = dash.config.identity.demo_password
    tab = Browser(chromium_browser, dash)
    page = tab.page
    tab.login("demo", demo_password)
    response = tab.go("/")
    assert "app;dur=" in response.headers["server-timing"]
    # The browser's navigation timing carries it too (what a user's devtools show).
    timing = page.evaluate(
        "performance.getEntriesByType('navigation')[0].serverTiming.map(t => [t.name, t.duration])"
    )
    assert {name for name, _ in timing} == {"app", "api"} and all(d >= 0 for _, d in timing)
    assert page.locator(".chart").count() == 9
    tab.shot("overview")

    # An image from a file, with the progress bar.
    image_file = tmp_path / "disk.raw"
    image_file.write_bytes(os.urandom(3 * 1024 * 1024))
    tab.go("/images")
    page.fill("#image-upload input[name=name]", "uploaded-disk")
    page.set_input_files("#image-upload input[name=file]", str(image_file))
    page.click("#image-upload button")
    page.wait_for_selector("#images a:text('uploaded-disk')")
    assert (
        page.locator("#images tr", has_text="uploaded-disk").locator("td").nth(1).inner_text()
        == "active"
    )
    tab.shot("images")

    # The launch wizard, landing on the new server's live page: BUILD, then ACTIVE
    # without a reload (a marker set in the page survives).
    tab.go("/instances/launch")
    tab.shot("launch-wizard")
    page.fill("input[name=name]", "web1")
    choose(page, "#image", "uploaded-disk")
    choose(page, "#flavor", "m1.tiny")
    assert page.inner_text("#flavor-fit") == "Fits the image."
    page.click("#launch-submit")
    page.wait_for_url(re.compile(r"/instances/[0-9a-f-]{36}$"))
    server_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.sameDocument = true")
    assert page.inner_text("#server-status .badge") == "BUILD"
    page.wait_for_selector("#server-status .badge:text('ACTIVE')")
    page.wait_for_selector("#resize select[name=flavor]")  # offered once ACTIVE, live too
    assert page.evaluate("window.sameDocument") is True
    # The boot timeline: the create action's events, each with its duration.
    page.wait_for_selector("#timeline .step-success [data-event], #timeline li.step-success")
    steps = page.locator("#timeline li.step")
    labels = [steps.nth(i).locator(".step-label").inner_text() for i in range(steps.count())]
    assert [s for s in labels if s in ("scheduling", "networking", "spawning")] == [
        "scheduling",
        "networking",
        "spawning",
    ], labels
    assert all(" s · " in steps.nth(i).inner_text() for i in range(steps.count()))
    page.wait_for_function("document.querySelector('#console-log').textContent.length > 20")
    tab.shot("instance-detail")

    # Attach a new volume.
    page.fill("#attach-volume input[name=size]", "1")
    page.click("#attach-volume button")
    page.wait_for_selector("#attached-volumes li:has-text('/dev/')")
    # Associate a floating IP (a new one from the public pool).
    page.click("#associate-fip button")
    page.wait_for_selector("#server-fips li:not(.muted)")
    address = page.inner_text("#server-fips li .address")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address.strip())
    tab.go("/floating-ips")
    assert page.locator("#fips", has_text=address.strip()).count() == 1
    tab.shot("floating-ips")
    tab.go(f"/instances/{server_id}")
    log = page.inner_text("#action-log")
    # The VNC console: a console URL on the noVNC proxy (the form in the console's frame
    # opens it in a new tab).
    csrf = page.get_attribute("form.logout input[name=csrf_token]", "value")
    console = tab.context.request.post(
        url(dash, f"/instances/{server_id}/console"),
        form={"csrf_token": csrf},
        max_redirects=0,
    )
    location = console.headers["location"]
    assert console.status == 303 and f":{dash.config.ports.novncproxy}/vnc_lite.html" in location
    assert "create" in log and "attach_volume" in log, log
    tab.go("/volumes")
    assert page.locator("#volumes .badge-in-use").count() == 1
    # A volume of its own, made then extended.
    page.fill("#volume-form input[name=name]", "data")
    page.click("#volume-form button")
    data_row = page.locator("#volumes tr", has_text="data")
    tab.reload_until("/volumes", lambda: data_row.locator(".badge-available").count())
    data_row.locator("input[name=new_size]").fill("2")
    data_row.locator("button:text('Extend')").click()
    tab.reload_until(
        "/volumes", lambda: data_row.locator("td", has_text="2 GiB").count()
    )  # extending, then the new size
    tab.shot("volumes")

    # The instances table follows a state change without a reload.
    tab.go("/instances")
    page.evaluate("window.sameDocument = true")
    row = page.locator(f"#server-{server_id}")
    assert row.locator(".badge").inner_text() == "ACTIVE"
    token = api_token(dash, "demo", demo_password, "demo")
    with compute(dash, token) as api:
        api.post(f"/servers/{server_id}/action", json={"os-stop": None}).raise_for_status()
    page.wait_for_selector(f"#server-{server_id} .badge:text('SHUTOFF')")
    assert page.evaluate("window.sameDocument") is True
    tab.shot("instances")

    # A network with a subnet and a router, then seen in the topology.
    tab.go("/networks")
    page.fill("#network-form input[name=name]", "web-net")
    page.fill("#network-form input[name=cidr]", "10.77.0.0/24")
    page.fill("#network-form input[name=router_name]", "web-router")
    page.click("#network-form button")
    page.wait_for_selector("td:text('web-net')")
    assert page.locator("#networks td", has_text="10.77.0.0/24").count() == 1
    assert page.locator("#routers tr", has_text="web-router").locator(".interface").count() == 1
    tab.shot("networks")
    tab.go("/topology")
    page.evaluate("window.sameDocument = true")
    # The server draws it (inline SVG): networks as bars, routers and servers as boxes.
    names = page.locator("#topology .topo-name").all_text_contents()
    bars = page.locator("#topology .topo-network text").all_text_contents()
    assert {"web-router", "web1"} <= set(names), names
    assert "web-net · 10.77.0.0/24" in bars and any(b.startswith("public") for b in bars), bars
    # Its scripts (htmx and its extensions; no graph library) stay well under 100 KB.
    script_bytes = page.evaluate(
        """Promise.all([...document.scripts].map((s) =>
             fetch(s.src).then((r) => r.arrayBuffer()).then((b) => b.byteLength)))"""
    )
    assert 0 < sum(script_bytes) < 100 * 1024, script_bytes
    # Live: a network made elsewhere (the API) appears without a reload, then a router
    # interface on it, as a line from the router to its bar.
    neutron = f"http://127.0.0.1:{dash.config.ports.network}/v2.0"
    made = httpx.post(
        f"{neutron}/networks",
        headers={"X-Auth-Token": token},
        json={"network": {"name": "made-by-the-cli"}},
    )
    made.raise_for_status()
    made_id = made.json()["network"]["id"]
    page.wait_for_selector(f"#topo-network-{made_id}")
    subnet = httpx.post(
        f"{neutron}/subnets",
        headers={"X-Auth-Token": token},
        json={"subnet": {"network_id": made_id, "cidr": "10.78.0.0/24", "ip_version": 4}},
    )
    subnet.raise_for_status()
    router_id = page.get_attribute("#topology a:has(.topo-name:text-is('web-router'))", "data-id")
    httpx.put(
        f"{neutron}/routers/{router_id}/add_router_interface",
        headers={"X-Auth-Token": token},
        json={"subnet_id": subnet.json()["subnet"]["id"]},
    ).raise_for_status()
    page.wait_for_selector(
        f'#topology .topo-port[data-device="{router_id}"][data-network="{made_id}"]'
        '[data-ips="10.78.0.1"]'
    )
    assert page.evaluate("window.sameDocument") is True
    tab.shot("topology")
    # Each item is a link the keyboard reaches: the server's opens its page.
    page.focus(f"#topo-server-{server_id}")
    page.keyboard.press("Enter")
    page.wait_for_url(url(dash, f"/instances/{server_id}"))

    # An object up and back down.
    tab.go("/containers")
    page.fill("#container-form input[name=name]", "docs")
    page.click("#container-form button")
    page.wait_for_url(url(dash, "/containers/docs"))
    note = tmp_path / "notes.txt"
    note.write_text("hello from the dashboard\n")
    page.set_input_files("#object-upload input[name=file]", str(note))
    page.click("#object-upload button")
    page.wait_for_selector("#objects a:text('notes.txt')")
    tab.shot("container")
    with page.expect_download() as download:
        page.click("#objects a:text('notes.txt')")
    saved = tmp_path / "downloaded.txt"
    download.value.save_as(saved)
    assert saved.read_text() == "hello from the dashboard\n"

    # A security group rule added, then deleted.
    tab.go("/security-groups")
    default = page.locator("section.card", has_text="default")
    before = default.locator("tbody tr").count()
    default.locator("input[name=port]").fill("22")
    default.locator("button:text('Add rule')").click()
    page.wait_for_load_state()
    default = page.locator("section.card", has_text="default")
    assert default.locator("tbody tr").count() == before + 1
    # The row whose Ports cell is 22 (a remote group's id elsewhere may contain "22").
    ssh = default.locator("tbody tr").filter(has=page.locator("td", has_text=re.compile(r"^22$")))
    ssh.locator("button:text('Delete')").click()
    page.wait_for_load_state()
    assert page.locator("section.card", has_text="default").locator("tbody tr").count() == before

    for name in ("security-groups", "key-pairs", "containers"):
        tab.go(f"/{name}")
        tab.shot(name)

    # Log out: the session is gone, its token revoked.
    page.click("#logout")
    page.wait_for_url(re.compile(r"/login\?reason=logout"))
    assert "You logged out." in page.inner_text("#login-reason")
    tab.go("/instances")
    assert "/login" in page.url
    tab.shot("login")
    tab.close()


@pytest.fixture(scope="module")
def project_b(dash) -> dict[str, str]:
    """Project beta with its member bob, a server, a network, a key pair of its own."""
    dash.openstack("project", "create", "beta")
    dash.openstack("user", "create", "--password", BOB_PASSWORD, "bob")
    dash.openstack("role", "add", "--project", "beta", "--user", "bob", "member")
    dash.openstack("role", "add", "--project", "beta", "--user", "admin", "member")
    token = api_token(dash, "bob", BOB_PASSWORD, "beta")
    network = httpx.post(
        f"http://127.0.0.1:{dash.config.ports.network}/v2.0/networks",
        headers={"X-Auth-Token": token},
        json={"network": {"name": "beta-secret-net"}},
    ).json()["network"]
    with compute(dash, token) as api:
        flavor = api.get("/flavors").json()["flavors"][0]["id"]
        server = api.post(
            "/servers",
            json={
                "server": {
                    "name": "beta-secret-vm",
                    "flavorRef": flavor,
                    "imageRef": _any_image(dash),
                    "networks": "none",
                }
            },
        )
        server.raise_for_status()
        api.post("/os-keypairs", json={"keypair": {"name": "beta-secret-key"}}).raise_for_status()
    return {"server": server.json()["server"]["id"], "network": network["id"]}


def _any_image(dash: CloudRunner) -> str:
    """A small public image (made once by admin)."""
    images = dash.openstack("image", "list", "--public", "--name", "tiny-public", "-f", "json")
    if images:
        return images[0]["ID"]
    return _public_image(dash, "tiny-public", min_disk=0)


def _public_image(dash: CloudRunner, name: str, min_disk: int) -> str:
    data = Path(dash.state_dir) / f"{name}.raw"
    data.write_bytes(b"\0" * 65536)
    created = dash.openstack(
        "image", "create", "--public", "--disk-format", "raw", "--min-disk", str(min_disk),
        "--file", str(data), name, "-f", "json",
    )  # fmt: skip
    return created["id"]


def test_a_member_sees_nothing_of_another_project_nor_the_admin_pages(
    dash, chromium_browser, project_b
):
    tab = Browser(chromium_browser, dash)
    page = tab.page
    tab.login("demo", dash.config.identity.demo_password)
    for path in (
        "/instances",
        "/networks",
        "/key-pairs",
        "/topology",
        "/topology.json",
        "/instances/launch",
        "/floating-ips",
        "/volumes",
        "/security-groups",
        "/",
    ):
        tab.go(path)
        text = page.content()
        assert "beta-secret" not in text, path
    # Ids pasted into URLs answer the API's 404; admin pages answer 403.
    request = tab.context.request
    answer = request.get(url(dash, f"/instances/{project_b['server']}"))
    assert answer.status == 404 and "could not be found" in answer.text()
    for kind in ADMIN_PAGES:
        assert request.get(url(dash, f"/admin/{kind}")).status == 403
    tab.close()

    admin = Browser(chromium_browser, dash)
    admin.login("admin", dash.config.identity.admin_password)
    for kind in ADMIN_PAGES:
        assert admin.go(f"/admin/{kind}").status == 200
        admin.shot(f"admin-{kind}")
    admin.go("/admin/projects")
    assert admin.page.locator("td", has_text="beta").count() >= 1
    admin.go("/admin/instances")  # every project's
    assert admin.page.locator("td", has_text="beta-secret-vm").count() == 1
    # Switching project: the pages then show beta's resources.
    admin.page.select_option("#project-select", label="beta")
    admin.page.wait_for_selector("h1:text('Overview of beta')")
    admin.go("/instances")
    assert admin.page.locator("td", has_text="beta-secret-vm").count() == 1
    admin.close()


def test_a_user_with_totp_gives_the_passcode_alone_after_the_password(dash, chromium_browser):
    user = dash.openstack("user", "create", "--password", "dave-secret-pw", "dave", "-f", "json")
    dash.openstack("role", "add", "--project", "demo", "--user", "dave", "member")
    secret = base64.b32encode(os.urandom(20)).decode().rstrip("=")
    dash.openstack("credential", "create", "--type", "totp", user["id"], secret)
    dash.openstack("user", "set", "--multi-factor-auth-rule", "password,totp", "dave")
    tab = Browser(chromium_browser, dash)
    page = tab.page
    tab.go("/login")
    page.fill("input[name=username]", "dave")
    page.fill("input[name=password]", "dave-secret-pw")
    page.click("button[type=submit]")
    # The password alone: Keystone's receipt stands for it, only the passcode is asked.
    page.wait_for_selector("#passcode-step")
    assert page.locator("input[name=password]").count() == 0
    wrong = str((int(totp.passcode(secret)) + 1) % 1_000_000).zfill(6)
    page.fill("input[name=passcode]", wrong)
    page.click("#passcode-step button[type=submit]")
    assert "passcode is wrong" in page.inner_text("p[role=alert]")
    page.fill("input[name=passcode]", totp.passcode(secret))
    page.click("#passcode-step button[type=submit]")
    page.wait_for_url(url(dash, "/"))
    assert "dave" in page.inner_text(".who")
    tab.close(allow_http_errors=True)  # the wrong passcode answered 401


def test_the_session_is_renewed_in_a_dialog_and_the_wizard_keeps_what_was_typed(
    dash, chromium_browser
):
    dash.openstack("user", "create", "--password", "erin-secret-pw", "erin")
    dash.openstack("role", "add", "--project", "demo", "--user", "erin", "member")
    _any_image(dash)  # tiny-public
    tab = Browser(chromium_browser, dash)
    page = tab.page
    page.clock.install()  # the browser's clock: moved on below, the token's hour in seconds
    tab.login("erin", "erin-secret-pw")
    tab.go("/instances/launch")
    page.fill("input[name=name]", "typed-before-renewal")
    choose(page, "#image", "tiny-public")
    choose(page, "#flavor", "m1.tiny")
    page.fill("textarea[name=user_data]", "#!/bin/sh\necho kept")
    assert not page.is_visible("#session-warning")
    page.clock.fast_forward("52:00")  # 8 minutes left: the header says so
    page.wait_for_selector("#session-warning", state="visible")
    page.clock.fast_forward("09:00")  # past the token's end: the dialog opens by itself
    page.wait_for_selector("#renew-dialog[open]")
    assert "ended" in page.inner_text("#renew-why") and not page.is_visible("#renew-later")
    page.fill("input[name=renew_password]", "not-the-password")
    page.click("#renew-submit")
    page.wait_for_selector("#renew-error", state="visible")
    assert "wrong" in page.inner_text("#renew-error")
    page.fill("input[name=renew_password]", "erin-secret-pw")
    page.click("#renew-submit")
    page.wait_for_selector("#renew-dialog", state="hidden")
    assert not page.is_visible("#session-warning")
    # The page never left: what was typed is there, and the wizard launches with it.
    assert page.input_value("input[name=name]") == "typed-before-renewal"
    assert page.input_value("textarea[name=user_data]") == "#!/bin/sh\necho kept"
    page.click("#launch-submit")
    page.wait_for_url(re.compile(r"/instances/[0-9a-f-]{36}$"))
    assert "typed-before-renewal" in page.inner_text("main")
    # Renewed again from the header before the end, the server page's live stream open:
    # the session's trust renews it without the password (no dialog), and the stream
    # carries on with the new token (the old one is revoked).
    server_page = page.url
    page.clock.fast_forward("52:00")
    page.wait_for_selector("#session-warning", state="visible")
    page.click("#session-renew-open")
    page.wait_for_selector("#session-warning", state="hidden")
    assert not page.is_visible("#renew-dialog")
    page.wait_for_timeout(2500)  # more than a live stream's round
    assert page.url == server_page
    page.wait_for_selector("#server-status .badge:text('ACTIVE')")
    tab.close(allow_http_errors=True)  # the wrong password answered 401


def test_the_session_ends_with_its_token_and_the_login_page_says_why(dash, chromium_browser):
    dash.openstack("user", "create", "--password", "carol-secret-pw", "carol")
    dash.openstack("role", "add", "--project", "demo", "--user", "carol", "member")
    tab = Browser(chromium_browser, dash)
    tab.login("carol", "carol-secret-pw")
    tab.go("/instances")
    dash.openstack("user", "set", "--disable", "carol")  # her tokens are revoked with it
    # The open page's live stream finds out and takes her to the login page.
    tab.page.wait_for_url(re.compile(r"/login\?reason=revoked"))
    assert "Your session ended" in tab.page.inner_text("#login-reason")
    tab.go("/instances")  # the session is gone, not only its page
    assert "/login" in tab.page.url
    tab.close()


def test_bad_input_shows_the_api_message_and_creates_nothing(dash, chromium_browser, tmp_path):
    demo_password = dash.config.identity.demo_password
    token = api_token(dash, "demo", demo_password, "demo")
    big_image = _public_image(dash, "needs-5-gib", min_disk=5)
    with compute(dash, token) as api:
        before = {s["id"] for s in api.get("/servers").json()["servers"]}
    tab = Browser(chromium_browser, dash)
    page = tab.page
    tab.login("demo", demo_password)

    def launch(
        name: str, image: str | None, flavor: str, count: int = 1, new_key: str = ""
    ) -> None:
        tab.go("/instances/launch")
        page.fill("input[name=name]", name)
        page.fill("input[name=new_key_name]", new_key)
        if image:
            page.select_option("#image", image)
        choose(page, "#flavor", flavor)
        page.fill("input[name=count]", str(count))
        page.click("#launch-submit")
        page.wait_for_selector("p[role=alert]")

    launch("no-image", None, "m1.tiny")
    assert "image" in page.inner_text("p[role=alert]").lower()
    assert page.input_value("input[name=name]") == "no-image"  # the form is kept
    launch("too-small", big_image, "m1.tiny")
    assert "Too small" in page.inner_text("#flavor-fit")  # said before submitting too
    message = page.locator("fieldset:has(#flavor) p[role=alert]").inner_text()
    assert "too small" in message.lower() and "request req-" in message
    launch("too-many", _any_image(dash), "m1.tiny", count=500, new_key="too-many-key")
    assert "quota" in page.inner_text("p[role=alert]").lower()
    tab.shot("launch-errors")
    with compute(dash, token) as api:
        after = {s["id"] for s in api.get("/servers").json()["servers"]}
    assert after == before, "a refused launch created a server"

    tab.go("/key-pairs")
    for _ in range(2):
        page.fill("#keypair-form input[name=name]", "dup-key")
        page.click("#keypair-form button")
        page.wait_for_load_state()
    assert "already exists" in page.inner_text("#keypair-form p.error")
    assert page.locator("td", has_text="dup-key").count() == 1

    # A forged form (no CSRF token) is refused, and nothing is made.
    forged = tab.context.request.post(url(dash, "/key-pairs"), form={"name": "forged-key"})
    assert forged.status == 403 and "CSRF" in forged.text()
    with compute(dash, token) as api:
        names = [k["keypair"]["name"] for k in api.get("/os-keypairs").json()["keypairs"]]
    assert "forged-key" not in names and names.count("dup-key") == 1
    assert "too-many-key" not in names  # the refused launch's new key pair went with it
    tab.close(allow_http_errors=True)


def test_the_wizard_boots_from_a_new_volume_in_a_server_group(dash, chromium_browser):
    dash.openstack("server", "group", "create", "--policy", "anti-affinity", "web-group")
    _any_image(dash)  # tiny-public
    tab = Browser(chromium_browser, dash)
    page = tab.page
    tab.login("admin", dash.config.identity.admin_password)
    tab.go("/instances/launch")
    # Each boot source shows only its own fields.
    page.check("#boot-source input[value=volume]")
    assert page.is_visible("#boot-volume") and not page.is_visible("#image")
    page.check("#boot-source input[value=snapshot]")
    assert page.is_visible("#snapshot") and page.is_visible("input[name=volume_size]")
    page.check("#boot-source input[value=image]")
    assert page.is_visible("#image") and not page.is_visible("#snapshot")
    page.fill("input[name=name]", "from-volume")
    choose(page, "#image", "tiny-public")
    choose(page, "#flavor", "m1.tiny")
    page.fill("input[name=volume_size]", "1")
    choose(page, "select[name=server_group]", "web-group")
    page.fill("input[name=new_key_name]", "made-in-the-wizard")
    page.click("#launch-submit")
    page.wait_for_url(re.compile(r"/instances/[0-9a-f-]{36}$"))
    assert "PRIVATE KEY" in page.inner_text("#private-key")  # shown once
    page.wait_for_selector("#server-status .badge:text('ACTIVE')")
    page.reload()  # the volumes list is drawn with the page
    assert page.locator("#private-key").count() == 0
    assert "made-in-the-wizard" in page.inner_text("dl.facts")
    assert "(volume)" in page.inner_text("dl.facts")
    assert page.locator("#attached-volumes li", has_text="/dev/vda").count() == 1
    group = dash.openstack("server", "group", "show", "web-group", "-f", "json")
    assert page.url.rsplit("/", 1)[1] in group["members"]
    # Sorted by name on the server, the sort in the URL.
    tab.go("/instances")
    page.click("th a:text('Name')")
    page.wait_for_url(re.compile(r"sort_key=display_name"))
    tab.close()


def test_the_browser_driven_is_debian_s_chromium(chromium_browser):
    """The tests drive the system package, not a browser Playwright downloaded."""
    packaged = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    assert chromium_browser.version in packaged, (chromium_browser.version, packaged)

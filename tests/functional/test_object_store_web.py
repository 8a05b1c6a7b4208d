"""Object Storage as a web host and with links: Swift's staticweb (a public container
served as a website: index pages, listings, error pages) and symlinks (objects that
stand for other objects), with plain HTTP, openstacksdk and the `swift` CLI."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.object_store_helpers import (
    account_client,
    admin_http_fixture,
    policy_cloud_fixture,
    swift,
    unique,
)

cloud = policy_cloud_fixture("object-store-web")
http = admin_http_fixture()
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


@pytest.fixture(scope="module")
def anonymous(http: httpx.Client):
    """No token, the same account URL (what a browser sends)."""
    with httpx.Client(base_url=str(http.base_url), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner):
    """The demo user's own account."""
    with account_client(cloud, cloud.token("demo", project="demo")) as client:
        yield client


def account_path(http: httpx.Client) -> str:
    return http.base_url.path.rstrip("/")  # /v1/AUTH_<project>


def website(http: httpx.Client, *, acl: str = ".r:*,.rlistings", **settings: str) -> str:
    """A public container with web settings (Web-Index=..., Web-Listings=...)."""
    name = unique("site")
    headers = {"X-Container-Read": acl}
    headers |= {f"X-Container-Meta-Web-{k.replace('_', '-')}": v for k, v in settings.items()}
    assert http.put(f"/{name}", headers=headers).status_code == 201
    return name


def put(http: httpx.Client, path: str, data: bytes = b"", **headers: str) -> httpx.Response:
    response = http.put(path, content=data, headers=headers)
    assert response.status_code == 201, response.text
    return response


# -- static websites ----------------------------------------------------------------


def test_info_announces_staticweb_and_symlinks(cloud: CloudRunner):
    info = httpx.get(f"http://127.0.0.1:{cloud.config.ports.object_store}/info").json()
    assert info["staticweb"] == {}
    assert info["symlink"] == {"symloop_max": 2, "static_links": True}


def test_a_container_with_web_index_serves_it_to_anonymous_visitors(http, anonymous):
    site = website(http, Index="index.html")
    put(http, f"/{site}/index.html", b"<h1>home</h1>", **{"Content-Type": "text/html"})
    # /container answers 301 to /container/, which serves the index (as Tempest reads it).
    moved = anonymous.get(f"/{site}")
    assert moved.status_code == 301
    assert moved.headers["Location"].endswith(f"{account_path(http)}/{site}/")
    assert "Moved Permanently" in moved.text
    page = anonymous.get(f"/{site}", follow_redirects=True)
    assert page.status_code == 200 and page.content == b"<h1>home</h1>"
    assert page.headers["Content-Type"] == "text/html"
    assert page.headers["ETag"] == hashlib.md5(b"<h1>home</h1>").hexdigest()
    head = anonymous.head(f"/{site}/")
    assert head.status_code == 200 and head.headers["Content-Length"] == "13"
    # The owner's token sees the container itself, unless asking for the web view.
    assert http.get(f"/{site}").text == "index.html\n"
    web = http.get(f"/{site}/", headers={"X-Web-Mode": "true"})
    assert web.content == b"<h1>home</h1>"
    # Unset, the container is a plain public container again.
    assert http.post(f"/{site}", headers={"X-Container-Meta-Web-Index": ""}).status_code == 204
    assert "X-Container-Meta-Web-Index" not in http.head(f"/{site}").headers
    assert anonymous.get(f"/{site}").text == "index.html\n"
    # X-Web-Mode on a container without web settings: 404.
    assert http.get(f"/{site}/", headers={"X-Web-Mode": "true"}).status_code == 404


def test_pseudo_directories_serve_their_index_and_redirect_without_slash(http, anonymous):
    site = website(http, Index="index.html")
    put(http, f"/{site}/docs/index.html", b"docs home")
    put(http, f"/{site}/docs/guide.txt", b"guide")
    assert anonymous.get(f"/{site}/docs/").content == b"docs home"
    moved = anonymous.get(f"/{site}/docs")
    assert moved.status_code == 301
    assert moved.headers["Location"].endswith(f"/{site}/docs/")
    assert anonymous.get(f"/{site}/docs/guide.txt").content == b"guide"
    # A directory without its index, listings off: 404, the page saying so.
    put(http, f"/{site}/empty/thing", b"x")
    assert anonymous.get(f"/{site}/empty").status_code == 301
    unindexed = anonymous.get(f"/{site}/empty/")
    assert unindexed.status_code == 404 and "Index File Not Found" in unindexed.text
    # Nothing by that name at all: the plain 404.
    missing = anonymous.get(f"/{site}/nothing")
    assert missing.status_code == 404
    assert "The resource could not be found." in missing.text


def test_web_listings_are_html_pages_with_the_listing_css(http, anonymous):
    site = website(http, Listings="true", Listings_CSS="listings.css")
    put(http, f"/{site}/readme.txt", b"r" * 2048, **{"Content-Type": "text/plain"})
    put(http, f"/{site}/photos/cat.jpg", b"meow")
    page = anonymous.get(f"/{site}/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=UTF-8"
    text = page.text
    assert f"<title>Listing of {account_path(http)}/{site}/</title>" in text
    assert '<link rel="stylesheet" type="text/css" href="listings.css" />' in text
    assert '<tr class="item subdir">' in text and '<a href="./photos/">photos/</a>' in text
    assert '<tr class="item type-text type-plain">' in text
    assert '<a href="./readme%2Etxt">readme.txt</a>' in text
    assert '<td class="colsize">2Ki</td>' in text
    head = anonymous.head(f"/{site}/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(page.content))
    # A directory's listing: its parent link, its names, the CSS one level up.
    sub = anonymous.get(f"/{site}/photos/").text
    assert '<a href="../">../</a>' in sub and '<a href="./cat%2Ejpg">cat.jpg</a>' in sub
    assert 'href="../listings.css"' in sub
    assert anonymous.get(f"/{site}/photos").status_code == 301
    assert anonymous.get(f"/{site}/nowhere/").status_code == 404
    # Listings need the listing right (.rlistings) besides .r:*.
    private = website(http, acl=".r:*", Listings="true")
    assert anonymous.get(f"/{private}/").status_code == 401


def test_listings_switched_off_answer_the_disabled_page(http, anonymous):
    site = website(http, Index="index.html", Listings="false")
    page = anonymous.get(f"/{site}/")
    assert page.status_code == 404
    assert "Web Listing Disabled" in page.text
    assert "X-Container-Meta-Web-Index: index.html" in page.text


def test_web_error_pages_are_served_with_the_error_status(http, anonymous):
    site = website(http, Listings="true", Error="error.html")
    put(http, f"/{site}/404error.html", b"<p>no such page</p>")
    missing = anonymous.get(f"/{site}/notexisting")
    assert missing.status_code == 404
    assert missing.content == b"<p>no such page</p>"
    # Without the error object, the plain 404.
    plain = website(http, Listings="true", Error="error.html")
    assert anonymous.get(f"/{plain}/notexisting").status_code == 404
    assert "Not Found" in anonymous.get(f"/{plain}/notexisting").text
    # A container page without the listing right: 401, with the 401 page.
    unlisted = website(http, acl=".r:*", Index="index.html", Error="error.html")
    put(http, f"/{unlisted}/401error.html", b"<p>members only</p>")
    refused = anonymous.get(f"/{unlisted}/")
    assert refused.status_code == 401 and refused.content == b"<p>members only</p>"
    # A private container's objects: the plain 401.
    assert anonymous.get(f"/{unique('nosite')}/x").status_code == 401


def test_directory_markers_are_directories(http, anonymous):
    site = website(http, Index="index.html", Directory_Type="text/directory")
    put(http, f"/{site}/pics", **{"Content-Type": "text/directory"})
    put(http, f"/{site}/pics/index.html", b"gallery")
    moved = anonymous.get(f"/{site}/pics")
    assert moved.status_code == 301
    assert anonymous.get(f"/{site}/pics/").content == b"gallery"


def test_swift_cli_sets_up_a_website(cloud: CloudRunner, http, anonymous, tmp_path: Path):
    site = unique("cli-site")
    (tmp_path / "index.html").write_text("<p>via the cli</p>")
    swift(cloud, "upload", site, "index.html", cwd=tmp_path)
    swift(cloud, "post", site, "-r", ".r:*")
    swift(cloud, "post", site, "-m", "web-index:index.html")
    assert anonymous.get(f"/{site}/index.html").text == "<p>via the cli</p>"
    # The container's own page is a listing's right (.rlistings), as in Swift.
    assert anonymous.get(f"/{site}/").status_code == 401
    swift(cloud, "post", site, "-r", ".r:*,.rlistings")
    assert anonymous.get(f"/{site}", follow_redirects=True).text == "<p>via the cli</p>"


# -- symlinks -----------------------------------------------------------------------


def test_a_symlink_reads_as_its_target_and_lists_its_path(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    data = os.urandom(20)
    put(http, f"/{box}/file.txt", data)
    link = put(
        http,
        f"/{box}/link.txt",
        **{"X-Symlink-Target": f"{box}/file.txt", "Content-Type": "application/symlink"},
    )
    assert link.headers["ETag"] == EMPTY_MD5
    got = http.get(f"/{box}/link.txt")
    assert got.content == data
    assert got.headers["Content-Location"] == f"{account_path(http)}/{box}/file.txt"
    assert got.headers["ETag"] == hashlib.md5(data).hexdigest()
    assert http.head(f"/{box}/link.txt").headers["Content-Length"] == "20"
    assert http.get(f"/{box}/link.txt", headers={"Range": "bytes=0-3"}).content == data[:4]
    listed = {o["name"]: o for o in http.get(f"/{box}", params={"format": "json"}).json()}
    assert listed["link.txt"]["content_type"] == "application/symlink"
    assert listed["link.txt"]["symlink_path"] == f"{account_path(http)}/{box}/file.txt"
    assert listed["link.txt"]["hash"] == EMPTY_MD5 and listed["link.txt"]["bytes"] == 0
    assert "symlink_path" not in listed["file.txt"]
    assert "symlink_path" not in http.get(f"/{box}", params={"format": "xml"}).text
    # ?symlink=get: the link itself.
    itself = http.get(f"/{box}/link.txt", params={"symlink": "get"})
    assert itself.content == b"" and itself.headers["X-Symlink-Target"] == f"{box}/file.txt"
    assert itself.headers["Content-Type"] == "application/symlink"
    assert "Content-Location" not in itself.headers
    # Deleting the link leaves the target.
    assert http.delete(f"/{box}/link.txt").status_code == 204
    assert http.get(f"/{box}/file.txt").content == data


def test_openstacksdk_symlink_across_containers(cloud: CloudRunner):
    conn = cloud.sdk()
    source, dest = unique("src"), unique("dst")
    conn.object_store.create_container(name=source)
    conn.object_store.create_container(name=dest)
    conn.object_store.upload_object(container=source, name="file.txt", data=b"shared")
    conn.object_store.upload_object(
        container=dest, name="link.txt", data=b"", symlink_target=f"{source}/file.txt"
    )
    assert conn.object_store.download_object("link.txt", container=dest) == b"shared"
    # The target gone, the link is broken (404, the target named).
    conn.object_store.delete_object("file.txt", container=source)
    with pytest.raises(Exception, match="404|Not Found"):
        conn.object_store.download_object("link.txt", container=dest)


def test_broken_and_looping_symlinks(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    put(http, f"/{box}/broken", **{"X-Symlink-Target": f"{box}/missing.txt"})
    broken = http.get(f"/{box}/broken")
    assert broken.status_code == 404
    assert broken.headers["Content-Location"] == f"{account_path(http)}/{box}/missing.txt"
    # a -> b -> c -> d: two links are followed at most.
    put(http, f"/{box}/d", b"end")
    for name, target in (("c", "d"), ("b", "c"), ("a", "b")):
        put(http, f"/{box}/{name}", **{"X-Symlink-Target": f"{box}/{target}"})
    assert http.get(f"/{box}/b").content == b"end"
    loop = http.get(f"/{box}/a")
    assert loop.status_code == 409
    assert loop.text == "Too many levels of symbolic links, maximum allowed is 2"


def test_symlink_puts_are_checked(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    with_body = http.put(f"/{box}/l", content=b"data", headers={"X-Symlink-Target": f"{box}/o"})
    assert with_body.status_code == 400
    assert with_body.text == "Symlink requests require a zero byte body"
    for bad in ("no-slash", "/lead/ing", f"{box}/"):
        answer = http.put(f"/{box}/l", content=b"", headers={"X-Symlink-Target": bad})
        assert answer.status_code == 412
        assert answer.text == (
            "X-Symlink-Target header must be of the form <container name>/<object name>"
        )
    itself = http.put(f"/{box}/l", content=b"", headers={"X-Symlink-Target": f"{box}/l"})
    assert itself.status_code == 400 and itself.text == "Symlink cannot target itself"
    slashed = http.put(
        f"/{box}/l",
        content=b"",
        headers={"X-Symlink-Target": f"{box}/o", "X-Symlink-Target-Account": "a/b"},
    )
    assert slashed.status_code == 412
    post = http.post(f"/{box}/l", headers={"X-Symlink-Target": f"{box}/o"})
    assert post.status_code == 400
    assert post.text == "A PUT request is required to set a symlink target"


def test_static_symlinks_pin_their_target_etag(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    data = b"version one"
    etag = hashlib.md5(data).hexdigest()
    put(http, f"/{box}/doc", data, **{"Content-Type": "text/plain"})
    missing = http.put(
        f"/{box}/nolink",
        content=b"",
        headers={"X-Symlink-Target": f"{box}/nothing", "X-Symlink-Target-Etag": etag},
    )
    assert missing.status_code == 409 and missing.text == "X-Symlink-Target does not exist"
    wrong = http.put(
        f"/{box}/pin",
        content=b"",
        headers={"X-Symlink-Target": f"{box}/doc", "X-Symlink-Target-Etag": EMPTY_MD5},
    )
    assert wrong.status_code == 409
    assert wrong.text == (
        f"Object Etag '{etag}' does not match X-Symlink-Target-Etag header '{EMPTY_MD5}'"
    )
    put(http, f"/{box}/pin", **{"X-Symlink-Target": f"{box}/doc", "X-Symlink-Target-Etag": etag})
    itself = http.head(f"/{box}/pin", params={"symlink": "get"})
    assert itself.headers["X-Symlink-Target-Etag"] == etag
    assert itself.headers["X-Symlink-Target-Bytes"] == str(len(data))
    assert itself.headers["Content-Type"] == "text/plain"  # the target's, when not given
    listed = {o["name"]: o for o in http.get(f"/{box}", params={"format": "json"}).json()}
    assert listed["pin"]["symlink_etag"] == etag and listed["pin"]["symlink_bytes"] == len(data)
    assert http.get(f"/{box}/pin").content == data
    # The target changes: the static link refuses to read it.
    put(http, f"/{box}/doc", b"version two")
    changed = http.get(f"/{box}/pin")
    assert changed.status_code == 409
    assert changed.headers["Content-Location"] == f"{account_path(http)}/{box}/doc"


def test_a_symlink_never_grants_access(http, anonymous, demo):
    private, public = unique("private"), unique("public")
    assert http.put(f"/{private}").status_code == 201
    assert http.put(f"/{public}", headers={"X-Container-Read": ".r:*"}).status_code == 201
    put(http, f"/{private}/secret", b"secret")
    put(http, f"/{public}/peek", **{"X-Symlink-Target": f"{private}/secret"})
    denied = anonymous.get(f"/{public}/peek")
    assert denied.status_code == 401
    assert denied.headers["Content-Location"].endswith(f"/{private}/secret")
    # A link in the demo user's own account to the admin's object: 403 for demo.
    mine = unique("mine")
    assert demo.put(f"/{mine}").status_code == 201
    other = account_path(http).rsplit("/", 1)[1]
    put(
        demo,
        f"/{mine}/theirs",
        **{"X-Symlink-Target": f"{private}/secret", "X-Symlink-Target-Account": other},
    )
    assert demo.get(f"/{mine}/theirs").status_code == 403
    # Once the container is readable by all, the same link reads.
    assert http.post(f"/{private}", headers={"X-Container-Read": ".r:*"}).status_code == 204
    assert demo.get(f"/{mine}/theirs").content == b"secret"


def test_copying_a_symlink_copies_its_target_or_the_link(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    put(http, f"/{box}/file", b"payload")
    put(http, f"/{box}/link", **{"X-Symlink-Target": f"{box}/file"})
    copied = http.request("COPY", f"/{box}/link", headers={"Destination": f"{box}/data-copy"})
    assert copied.status_code == 201
    assert http.get(f"/{box}/data-copy", params={"symlink": "get"}).content == b"payload"
    assert "X-Symlink-Target" not in http.head(f"/{box}/data-copy").headers
    linked = http.request(
        "COPY", f"/{box}/link?symlink=get", headers={"Destination": f"{box}/link-copy"}
    )
    assert linked.status_code == 201
    itself = http.head(f"/{box}/link-copy", params={"symlink": "get"})
    assert itself.headers["X-Symlink-Target"] == f"{box}/file"
    assert http.get(f"/{box}/link-copy").content == b"payload"
    listed = {o["name"]: o for o in http.get(f"/{box}", params={"format": "json"}).json()}
    assert listed["link-copy"]["symlink_path"].endswith(f"/{box}/file")


def test_post_to_a_symlink_answers_307_to_its_target(http):
    box = unique("links")
    assert http.put(f"/{box}").status_code == 201
    put(http, f"/{box}/file", b"x")
    put(http, f"/{box}/link", **{"X-Symlink-Target": f"{box}/file"})
    posted = http.post(f"/{box}/link", headers={"X-Object-Meta-Color": "red"})
    assert posted.status_code == 307
    assert posted.headers["Location"] == f"{account_path(http)}/{box}/file"
    # The metadata went to the link, not to its target.
    assert http.head(f"/{box}/link?symlink=get").headers["X-Object-Meta-Color"] == "red"
    assert "X-Object-Meta-Color" not in http.head(f"/{box}/file").headers


def test_a_website_index_may_be_a_symlink(http, anonymous):
    site = website(http, Index="index.html")
    put(http, f"/{site}/v2.html", b"<p>v2</p>")
    put(http, f"/{site}/index.html", **{"X-Symlink-Target": f"{site}/v2.html"})
    assert anonymous.get(f"/{site}/").content == b"<p>v2</p>"


def signed(path: str, key: str, method: str = "GET") -> dict[str, str]:
    """A temp URL's query for the path (/v1/AUTH_x/c/o), valid for a minute."""
    expires = int(time.time()) + 60
    body = f"{method}\n{expires}\n{path}"
    sig = hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()
    return {"temp_url_sig": sig, "temp_url_expires": str(expires)}


def test_a_temp_url_follows_links_only_inside_its_container(http, anonymous):
    box, private = unique("signed"), unique("private")
    assert http.put(f"/{box}", headers={"X-Container-Meta-Temp-URL-Key": "k"}).status_code == 201
    assert http.put(f"/{private}").status_code == 201
    put(http, f"/{box}/file", b"inside")
    put(http, f"/{private}/file", b"outside")
    put(http, f"/{box}/near", **{"X-Symlink-Target": f"{box}/file"})
    put(http, f"/{box}/far", **{"X-Symlink-Target": f"{private}/file"})
    base = account_path(http)
    near = anonymous.get(f"/{box}/near", params=signed(f"{base}/{box}/near", "k"))
    assert near.status_code == 200 and near.content == b"inside"
    far = anonymous.get(f"/{box}/far", params=signed(f"{base}/{box}/far", "k"))
    assert far.status_code == 401
    query = signed(f"{base}/{box}/new", "k", "PUT")
    made = anonymous.put(
        f"/{box}/new", params=query, content=b"", headers={"X-Symlink-Target": f"{box}/file"}
    )
    assert made.status_code == 400
    assert made.text == "The header 'X-Symlink-Target' is not allowed in this tempurl"


# -- CORS --------------------------------------------------------------------------------


def test_cors_preflight_and_answers_follow_the_containers_origins(http, anonymous):
    name = unique("cors")
    page = "https://app.example"
    assert http.put(name, headers={
        "X-Container-Meta-Access-Control-Allow-Origin": f"{page} https://other.example",
        "X-Container-Meta-Access-Control-Max-Age": "600",
        "X-Container-Meta-Access-Control-Expose-Headers": "X-Custom-Thing",
        "X-Container-Read": ".r:*",
    }).status_code == 201  # fmt: skip
    assert (
        http.put(f"{name}/o", content=b"hi", headers={"X-Object-Meta-Color": "blue"}).status_code
        == 201
    )

    # A browser's preflight before a PUT with a token.
    pre = anonymous.options(f"{name}/o", headers={
        "Origin": page, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-auth-token, content-type",
    })  # fmt: skip
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == page
    assert "PUT" in pre.headers["Access-Control-Allow-Methods"]
    assert pre.headers["Access-Control-Allow-Headers"] == "x-auth-token, content-type"
    assert pre.headers["Access-Control-Max-Age"] == "600"
    # Another origin, or a method Swift does not have: 401.
    other = anonymous.options(f"{name}/o", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert other.status_code == 401 and "Access-Control-Allow-Origin" not in other.headers
    bad = anonymous.options(f"{name}/o", headers={
        "Origin": page, "Access-Control-Request-Method": "TRACE"})  # fmt: skip
    assert bad.status_code == 401
    # No Origin: a plain OPTIONS, what methods there are.
    plain = anonymous.options(f"{name}/o")
    assert plain.status_code == 200 and "GET" in plain.headers["Allow"]

    # The actual request: the origin allowed, the headers a script may read listed.
    got = anonymous.get(f"{name}/o", headers={"Origin": page})
    assert got.status_code == 200 and got.content == b"hi"
    assert got.headers["Access-Control-Allow-Origin"] == page
    exposed = got.headers["Access-Control-Expose-Headers"]
    for header in ("etag", "x-object-meta-color", "x-custom-thing", "x-trans-id"):
        assert header in exposed
    # Errors carry them too (a script sees the 404); other origins get none.
    missing = anonymous.get(f"{name}/nothing", headers={"Origin": page})
    assert missing.status_code == 404 and missing.headers["Access-Control-Allow-Origin"] == page
    foreign = anonymous.get(f"{name}/o", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers

    # "*" allows every origin; a container without the setting allows none.
    http.post(name, headers={"X-Container-Meta-Access-Control-Allow-Origin": "*"})
    star = anonymous.get(f"{name}/o", headers={"Origin": "https://any.example"})
    assert star.headers["Access-Control-Allow-Origin"] == "*"
    plain_name = unique("nocors")
    http.put(plain_name, headers={"X-Container-Read": ".r:*"})
    http.put(f"{plain_name}/o", content=b"x")
    none = anonymous.get(f"{plain_name}/o", headers={"Origin": page})
    assert "Access-Control-Allow-Origin" not in none.headers
    assert anonymous.options(f"{plain_name}/o", headers={
        "Origin": page, "Access-Control-Request-Method": "GET"}).status_code == 401  # fmt: skip

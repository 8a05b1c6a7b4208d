"""Static websites (Swift's staticweb middleware): a container's X-Container-Meta-Web-*
settings for anonymous GETs and HEADs (a token's only with `X-Web-Mode: true`).

Web-Index: the object served for the container and for pseudo-directories (`dir/`;
`dir` answers 301 to `dir/`). Web-Listings: true: an HTML listing where there is no
index (linking Web-Listings-CSS, titled with Web-Listings-Label). Web-Error: the
`<status><Web-Error>` object (404error.html) is the body of a 404 (and 401) answer.
Web-Directory-Type: the content type of directory markers (empty objects served as
not found; application/directory unless set). Every read is the caller's own: the
container's read ACL must let them (`.r:*`, and `.rlistings` for listings)."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import Caller, acl_allows, deny, store_of
from cumulo.object_store.api.responses import ObjectBody
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.storage import timestamps

TRUE = ("true", "1", "yes", "on", "t", "y")
# Headers an error page's read keeps (who asks, and from where), not its conditions.
PLAIN_HEADERS = {b"x-auth-token", b"referer", b"host", b"user-agent"}
ReadObject = Callable[[Request, str], Awaitable[Response]]


def info() -> dict:
    return {}


def _web_mode(request: Request) -> bool:
    return request.headers.get("x-web-mode", "").lower() in TRUE


def applies(request: Request, caller: Caller) -> bool:
    """Swift's rule: GET and HEAD by anonymous callers, or with X-Web-Mode: true."""
    return request.method in ("GET", "HEAD") and (caller.ctx is None or _web_mode(request))


@dataclass
class Site:
    """A container's web settings, as set (Web-Listings is a flag only when read)."""

    index: str = ""
    error: str = ""
    listings: str = ""
    listings_css: str = ""
    listings_label: str = ""
    directory_type: str = ""

    @classmethod
    def of(cls, metadata: dict | None) -> Site:
        meta = metadata or {}
        return cls(
            *(
                meta.get(f"X-Container-Meta-Web-{key}", "").strip()
                for key in ("Index", "Error", "Listings", "Listings-Css", "Listings-Label")
            ),
            meta.get("X-Container-Meta-Web-Directory-Type", "").strip(),
        )

    @property
    def configured(self) -> bool:
        return bool(self.index or self.listings)


@dataclass
class WebRequest:
    """One static web request: who asks for which container, how objects are read."""

    request: Request
    caller: Caller
    account: str
    container: str
    read: ReadObject
    site: Site
    acl: str | None = None

    @property
    def path(self) -> str:
        return self.request.scope["path"]


async def _web_request(request, caller, account, container, read) -> WebRequest:
    info = await store_of(request).proxy.container_info(account, container)
    meta = info.metadata or {}
    return WebRequest(
        request, caller, account, container, read, Site.of(meta), meta.get("X-Container-Read")
    )


async def serve_container(
    request: Request, caller: Caller, account: str, container: str, read: ReadObject
) -> Response | None:
    """The container's page: its index, or its listing; None: not a web request (a
    container without web settings, the usual container answer)."""
    web = await _web_request(request, caller, account, container, read)
    if not caller.owner and not acl_allows(caller, web.acl, request, listing=True):
        return await _error_page(web, deny(caller))
    if not web.site.configured:
        if _web_mode(request):
            raise SwiftError(404)
        return None
    if not web.path.endswith("/"):
        return _redirect_to_directory(request)
    if not web.site.index:
        return await _listing(web, "")
    try:
        return await read(request, web.site.index)
    except SwiftError as exc:
        if exc.status == 404:
            return await _listing(web, "")
        if 300 <= exc.status < 400:
            raise
        return await _error_page(web, exc)


async def serve_object(
    request: Request, caller: Caller, account: str, container: str, name: str, read: ReadObject
) -> Response:
    """The object; for a missing one (or a directory marker), the index of the
    directory it names, a 301 to `name/`, a listing, or a 404 (with the error page)."""
    failure: SwiftError | None = None
    try:
        found = await read(request, name)
    except SwiftError as exc:
        if 300 <= exc.status < 400:
            raise
        failure = exc
    web = await _web_request(request, caller, account, container, read)
    if failure is None:
        if not _is_directory_marker(found, web.site.directory_type or "application/directory"):
            return found
        _discard(found)
        failure = SwiftError(404)
    if failure.status != 404 or not web.site.configured:
        raise failure  # no error page but for a 404 (as Swift)
    if web.site.index:
        directory = name if name.endswith("/") else f"{name}/"
        try:
            index = await read(request, directory + web.site.index)
        except SwiftError as exc:
            if exc.status != 404:
                raise
        else:
            if not web.path.endswith("/"):
                _discard(index)
                return _redirect_to_directory(request)
            return index
    if web.path.endswith("/"):
        return await _listing(web, name)
    rows = await _rows(web, f"{name}/", limit=1)
    if not rows:
        return await _error_page(web, SwiftError(404))
    return _redirect_to_directory(request)


def _is_directory_marker(response: Response, directory_type: str) -> bool:
    """An empty (or one byte) object of the directory type stands for a directory."""
    header = response.header if isinstance(response, ObjectBody) else response.headers.get
    return header("content-type") == directory_type and int(header("content-length") or 0) <= 1


def _discard(response: Response) -> None:
    if isinstance(response, ObjectBody):
        response.close()


def _redirect_to_directory(request: Request) -> Response:
    location = quote(request.scope["path"] + "/")
    host = request.headers.get("host") or request.url.netloc
    body = b"<html><h1>Moved Permanently</h1><p>The resource has moved permanently.</p></html>"
    return _html(request, 301, body, {"Location": f"{request.url.scheme}://{host}{location}"})


def _html(request: Request, status: int, body: bytes, headers: dict | None = None) -> Response:
    headers = {"Content-Type": "text/html; charset=UTF-8", **(headers or {})}
    if request.method == "HEAD":
        return Response(b"", status, headers={**headers, "Content-Length": str(len(body))})
    return Response(body, status, headers=headers)


async def _error_page(web: WebRequest, error: SwiftError) -> Response:
    """The container's `<status><Web-Error>` object with the error's status, or the
    error itself when there is none (or the caller may not read it)."""
    if not web.site.error:
        raise error
    scope = web.request.scope
    headers = [(k, v) for k, v in scope["headers"] if k in PLAIN_HEADERS]
    plain = Request({**scope, "query_string": b"", "headers": headers}, web.request.receive)
    try:
        page = await web.read(plain, f"{error.status}{web.site.error}")
    except SwiftError:
        raise error from None
    if isinstance(page, ObjectBody):
        page.status = error.status
    else:
        page.status_code = error.status
    return page


async def _rows(web: WebRequest, prefix: str, limit: int | None = None) -> list[dict] | None:
    """The container's listing under prefix (delimited by /), as the caller may list
    it (None when they may not)."""
    store = store_of(web.request)
    if not web.caller.owner and not acl_allows(web.caller, web.acl, web.request, listing=True):
        return None
    query = {
        "limit": limit or store.config.container_listing_limit,
        "marker": "",
        "end_marker": "",
        "prefix": prefix,
        "delimiter": "/",
        "reverse": False,
    }
    found = await store.proxy.container_listing(web.account, web.container, query)
    return found[1] if found else None


async def _listing(web: WebRequest, prefix: str) -> Response:
    """The HTML listing of a directory (Swift's markup, ids and classes, for styling)."""
    label = web.path
    if web.site.listings_label:
        label = f"{web.site.listings_label}/{'/'.join(web.path.split('/')[4:])}"
    title = html.escape(label)
    if web.site.listings.lower() not in TRUE:
        return await _error_page(web, SwiftError(404, _disabled_page(web.site, title, prefix)))
    rows = await _rows(web, prefix)
    if rows is None:
        return await _error_page(web, deny(web.caller))
    if prefix and not rows:
        return await _error_page(web, SwiftError(404))
    body = (
        "<!DOCTYPE html>\n<html>\n <head>\n"
        f"  <title>Listing of {title}</title>\n"
        f"{_style(web.site, prefix, LISTING_STYLE)}"
        " </head>\n <body>\n"
        f'  <h1 id="title">Listing of {title}</h1>\n'
        '  <table id="listing">\n'
        '   <tr id="heading">\n'
        '    <th class="colname">Name</th>\n'
        '    <th class="colsize">Size</th>\n'
        '    <th class="coldate">Date</th>\n'
        "   </tr>\n"
    )
    if prefix:
        body += _row("", "../", "../", "&nbsp;", "&nbsp;", row_id="parent")
    for row in rows:
        if "subdir" in row:
            subdir = row["subdir"][len(prefix) :]
            body += _row("subdir", _href(subdir), html.escape(subdir), "&nbsp;", "&nbsp;")
    for row in rows:
        if "subdir" not in row:
            name = row["name"][len(prefix) :]
            kinds = row["content_type"].lower().split("/")
            types = " ".join(f"type-{html.escape(t)}" for t in kinds)
            date = html.escape(timestamps.iso(row["created_at"])).split(".")[0].replace("T", " ")
            size = human_readable(row["size"])
            body += _row(types, _href(name), html.escape(name), size, date)
    body += "  </table>\n </body>\n</html>\n"
    return _html(web.request, 200, body.encode())


LISTING_STYLE = (
    "   h1 {font-size: 1em; font-weight: bold;}\n"
    "   th {text-align: left; padding: 0px 1em 0px 1em;}\n"
    "   td {padding: 0px 1em 0px 1em;}\n"
    "   a {text-decoration: none;}\n"
)
DISABLED_STYLE = "   h1 {font-size: 1em; font-weight: bold;}\n   p {font-size: 2}\n"


def _style(site: Site, prefix: str, default: str) -> str:
    """The listing's style: a link to Web-Listings-CSS (relative to the directory
    unless a URL or an absolute path), or Swift's own."""
    if not site.listings_css:
        return f'  <style type="text/css">\n{default}  </style>\n'
    css = site.listings_css
    if css.startswith(("/", "http://", "https://")):
        href = quote(css, ":/")
    else:
        href = "../" * prefix.count("/") + quote(css)
    return f'  <link rel="stylesheet" type="text/css" href="{href}" />\n'


def _disabled_page(site: Site, title: str, prefix: str) -> str:
    body = (
        f"<!DOCTYPE html>\n<html>\n<head>\n<title>Listing of {title}</title>\n"
        f"{_style(site, prefix, DISABLED_STYLE)}"
        "</head>\n<body>  <h1>Web Listing Disabled</h1>"
        "   <p>The owner of this web site has disabled web listing."
        "   <p>If you are the owner of this web site, you can enable"
        "   web listing by setting X-Container-Meta-Web-Listings.</p>"
    )
    if site.index:
        body += (
            "<h1>Index File Not Found</h1> <p>The owner of this web site has set "
            f" <b>X-Container-Meta-Web-Index: {html.escape(site.index)}</b>. "
            " However, this file is not found.</p>"
        )
    return body + " </body>\n</html>\n"


def _href(name: str) -> str:
    return "./" + quote(name).replace(".", "%2E")


def _row(kind: str, href: str, text: str, size: str, date: str, row_id: str = "") -> str:
    attributes = f'id="{row_id}" class="item"' if row_id else f'class="item {kind}"'
    return (
        f"   <tr {attributes}>\n"
        f'    <td class="colname"><a href="{href}">{text}</a></td>\n'
        f'    <td class="colsize">{size}</td>\n'
        f'    <td class="coldate">{date}</td>\n'
        "   </tr>\n"
    )


def human_readable(value: int) -> str:
    """Swift's sizes: 1023, 1Ki, 5Mi (binary units, rounded)."""
    number = float(value)
    index = -1
    suffixes = "KMGTPEZY"
    while number >= 1024 and index + 1 < len(suffixes):
        index += 1
        number = round(number / 1024)
    return f"{int(number)}" if index == -1 else f"{round(number)}{suffixes[index]}i"

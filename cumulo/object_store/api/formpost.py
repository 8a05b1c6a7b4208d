"""FormPost (Swift's formpost middleware): a browser uploads files straight into a
container with an HTML form signed by the account's or the container's TempURL key.

The signature is HMAC(key, "<path>\\n<redirect>\\n<max_file_size>\\n<max_file_count>\\n
<expires>") (SHA1/SHA256/SHA512, hex or "<digest>:<base64>"); each file becomes
<path's object prefix><filename>. Without a redirect the answer is the status line as
text; with one, 303 to it with ?status=&message=.
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api import tempurl
from cumulo.object_store.api.common import store_of
from cumulo.object_store.constraints import MAX_OBJECT_NAME_LENGTH
from cumulo.object_store.errors import SwiftError

MAX_FORM_FILES = 1000


def info() -> dict:
    return {"allowed_digests": sorted(tempurl.DIGESTS), "deprecated_digests": ["sha1"]}


def is_form_post(request: Request) -> bool:
    return request.method == "POST" and request.headers.get("content-type", "").startswith(
        "multipart/form-data"
    )


def _int(attrs: dict, name: str) -> int:
    try:
        return int(attrs.get(name) or 0)
    except ValueError:
        raise SwiftError(400, f"FormPost: {name} not an integer") from None


async def form_post(request: Request, account: str, container: str, prefix: str) -> Response:
    store = store_of(request)
    form = await request.form(max_files=MAX_FORM_FILES)
    attrs = {k.lower(): v for k, v in form.multi_items() if isinstance(v, str)}
    files = [v for _k, v in form.multi_items() if isinstance(v, UploadFile) and v.filename]
    max_file_size = _int(attrs, "max_file_size")
    max_file_count = _int(attrs, "max_file_count")
    expires = _int(attrs, "expires")
    if expires < time.time():
        raise SwiftError(401, "FormPost: Form Expired")
    parsed = tempurl._signature(attrs.get("signature", ""))
    keys = await tempurl.keys_for(store, account, container)
    body = (
        f"{request.url.path}\n{attrs.get('redirect', '')}\n{attrs.get('max_file_size', '')}\n"
        f"{attrs.get('max_file_count', '')}\n{attrs.get('expires', '')}"
    ).encode()
    if parsed is None or not any(
        hmac.compare_digest(
            hmac.new(k.encode(), body, tempurl.DIGESTS[parsed[0]]).digest(), parsed[1]
        )
        for k in keys
    ):
        raise SwiftError(401, "FormPost: Invalid Signature")
    status, message = "201 Created", ""
    if not files:
        status, message = "400 Bad Request", "no files to process"
    elif len(files) > max_file_count:
        status, message = "400 Bad Request", "max file count exceeded"
    else:
        info = await store.proxy.container_info(account, container)
        if info.status != 200 or info.policy is None:
            raise SwiftError(404)
        for upload in files:
            name = f"{prefix}{upload.filename}"
            if len(name.encode()) > MAX_OBJECT_NAME_LENGTH or (upload.size or 0) > max_file_size:
                status, message = "400 Bad Request", "max_file_size exceeded"
                break
            metadata = {"Content-Type": upload.content_type or "application/octet-stream"}
            if attrs.get("x_delete_after"):
                metadata["X-Delete-At"] = str(int(time.time()) + _int(attrs, "x_delete_after"))
            elif attrs.get("x_delete_at"):
                metadata["X-Delete-At"] = str(_int(attrs, "x_delete_at"))

            async def chunks(f=upload):
                while chunk := await f.read(1 << 20):
                    yield chunk

            await store.proxy.object_put(
                info.policy,
                account,
                container,
                name,
                metadata,
                chunks(),
                max_size=max_file_size,
                expected_etag=None,
                content_length=upload.size,
            )
    code = int(status.split()[0])
    redirect = attrs.get("redirect")
    if not redirect:
        text = status + (f"\r\nFormPost: {message.title()}" if message else "")
        return Response(text.encode(), code, media_type="text/plain")
    location = redirect + ("&" if "?" in redirect else "?")
    location += f"status={code}&message={quote(message)}"
    page = f'<html><body><p><a href="{location}">Click to continue...</a></p></body></html>'
    return Response(page.encode(), 303, headers={"Location": location})

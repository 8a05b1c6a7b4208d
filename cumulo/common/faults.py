"""Errors every service raises, and the one place each API dialect renders them.

Handlers raise `ApiError` subclasses; the app factory turns them into the body
of the service's dialect (identity, compute, network, ...), so the same rule
code can sit behind any front end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"
    default_message = "An unexpected error prevented the server from fulfilling your request."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(ApiError):
    status, title = 400, "Bad Request"
    default_message = "The request could not be understood."


class Unauthorized(ApiError):
    status, title = 401, "Unauthorized"
    default_message = "The request you have made requires authentication."


class Forbidden(ApiError):
    status, title = 403, "Forbidden"
    default_message = "You are not authorized to perform the requested action."


class NotFound(ApiError):
    status, title = 404, "Not Found"
    default_message = "Could not find the requested resource."


class MethodNotAllowed(ApiError):
    status, title = 405, "Method Not Allowed"
    default_message = "The method is not allowed for the requested URL."


class Conflict(ApiError):
    status, title = 409, "Conflict"
    default_message = "Conflict occurred attempting to store the resource."


class PayloadTooLarge(ApiError):
    status, title = 413, "Request Entity Too Large"
    default_message = "Request is too large."


class RangeNotSatisfiable(ApiError):
    status, title = 416, "Requested Range Not Satisfiable"
    default_message = "The requested range is not satisfiable."


class RequestTimeout(ApiError):
    status, title = 408, "Request Timeout"
    default_message = "The request body did not arrive in time."


class UriTooLong(ApiError):
    status, title = 414, "Request-URI Too Long"
    default_message = "The request URI is longer than the limit."


class TooManyRequests(ApiError):
    status, title = 429, "Too Many Requests"
    default_message = "Too many requests: slow down and retry after the time given."


class HeadersTooLarge(ApiError):
    status, title = 431, "Request Header Fields Too Large"
    default_message = "The request's header fields are larger than the limit."


class UnsupportedMediaType(ApiError):
    status, title = 415, "Unsupported Media Type"
    default_message = "The media type of the request is not supported."


class NotAcceptable(ApiError):
    status, title = 406, "Not Acceptable"
    default_message = "The resource cannot be represented in the media type asked for."


class NotImplementedYet(ApiError):
    status, title = 501, "Not Implemented"
    default_message = "The action you have requested has not been implemented."


class ServiceUnavailable(ApiError):
    status, title = 503, "Service Unavailable"
    default_message = "The service is temporarily unavailable."
    retry_after = 5  # seconds: what the client is told to wait before trying again

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message, headers={"Retry-After": str(self.retry_after), **(headers or {})})


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        RequestTimeout,
        UriTooLong,
        TooManyRequests,
        HeadersTooLarge,
        UnsupportedMediaType,
        NotAcceptable,
        RangeNotSatisfiable,
        NotImplementedYet,
        ServiceUnavailable,
        ApiError,
    )
}

# A renderer turns an error into the JSON body of one API dialect.
ErrorRenderer = Callable[[ApiError], dict[str, Any]]


def render_identity(err: ApiError) -> dict[str, Any]:
    return {"error": {"code": err.status, "title": err.title, "message": err.message}}


# Compute and block storage name the body's key after the error kind.
_NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    408: "badRequest",
    413: "overLimit",
    414: "badRequest",
    429: "overLimit",
    431: "badRequest",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def render_compute(err: ApiError) -> dict[str, Any]:
    key = _NOVA_KEYS.get(err.status, "computeFault")
    return {key: {"code": err.status, "message": err.message}}


def render_network(err: ApiError) -> dict[str, Any]:
    kind = type(err).__name__ if type(err) not in ERRORS_BY_STATUS.values() else err.title
    return {"NeutronError": {"type": kind.replace(" ", ""), "message": err.message, "detail": ""}}


def render_image(err: ApiError) -> dict[str, Any]:
    # Glance's errors are webob's JSON bodies: the status line as code, and the
    # explanation in webob's body template.
    return {
        "message": f"{err.message}<br /><br />\n\n\n",
        "code": f"{err.status} {err.title}",
        "title": err.title,
    }


def render_key_manager(err: ApiError) -> dict[str, Any]:
    # Barbican's JSONErrorHook: webob's status title and the error's description.
    return {"code": err.status, "title": err.title, "description": err.message}

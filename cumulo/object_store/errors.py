"""Swift's errors: plain HTML or text bodies, as its WSGI responses (swob) have them."""

from __future__ import annotations

from cumulo.common.faults import ApiError

# swob's default bodies of the statuses Swift answers with.
DEFAULT_BODIES = {
    400: "Bad Request",
    401: "This server could not verify that you are authorized to access the document "
    "you requested.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    409: "There was a conflict when trying to complete your request.",
    411: "Length Required",
    412: "A precondition for this request was not met.",
    413: "The body of your request was too large for this server.",
    416: "The Range requested is not available.",
    422: "The request was well-formed but was unable to be followed due to semantic errors.",
    499: "Client Disconnect",
    503: "The server is currently unavailable. Please try again at a later time.",
    507: "There was not enough space to save the resource. Drive: ",
}

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    416: "Requested Range Not Satisfiable",
    422: "Unprocessable Entity",
    499: "Client Disconnect",
    500: "Internal Error",
    503: "Service Unavailable",
}


class SwiftError(ApiError):
    """An answer with a status and Swift's body: its own text, or swob's HTML page."""

    def __init__(
        self, status: int, text: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.title = TITLES.get(status, "Error")
        self.text = text
        super().__init__(text or DEFAULT_BODIES.get(status, self.title), headers=headers)

    def body(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        return f"<html><h1>{self.title}</h1><p>{self.message}</p></html>".encode()


def as_swift_error(err: ApiError) -> SwiftError:
    if isinstance(err, SwiftError):
        return err
    if err.status == 401:
        return SwiftError(401, headers=err.headers)
    return SwiftError(err.status, err.message if err.status < 500 else None)

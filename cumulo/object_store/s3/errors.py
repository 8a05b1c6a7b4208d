"""S3's error documents: a code, a status, a message, and the request id."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

# code -> (status, default message), as the Amazon S3 API reference lists them.
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AmbiguousGrantByEmailAddress": (
        400,
        "The email address you provided is associated with more than one account.",
    ),
    "AuthorizationQueryParametersError": (400, "Query-string authentication is malformed."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (
        409,
        "The requested bucket name is not available. The bucket namespace is shared by "
        "all users of the system. Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    ),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part might not have "
        "been uploaded, or the specified entity tag might not have matched the part's "
        "entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "InvalidPolicyDocument": (
        400,
        "The content of the form does not meet the conditions specified in the policy document.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MalformedACLError": (
        400,
        "The XML you provided was not well-formed or did not validate against our published "
        "schema.",
    ),
    "MalformedPOSTRequest": (
        400,
        "The body of your POST request is not well-formed multipart/form-data.",
    ),
    "MaxPostPreDataLengthExceeded": (
        400,
        "Your POST request fields preceding the upload file were too large.",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingSecurityHeader": (400, "Your request was missing a required header"),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified multipart upload does not exist. The upload ID might be invalid, "
        "or the multipart upload might have been aborted or completed.",
    ),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the current time is too large.",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "UnresolvableGrantByEmailAddress": (
        400,
        "The email address you provided does not match any account on record.",
    ),
    "UnexpectedContent": (400, "This request does not support content"),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


# Characters XML 1.0 cannot hold, even as references (a key may have them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(value: str) -> str:
    """Text for an error document: escaped, and what XML cannot hold percent-encoded."""
    return escape(_NOT_XML.sub(lambda m: f"%{ord(m.group()):02X}", value))


class S3Error(Exception):
    def __init__(self, code: str, message: str | None = None, **extra: str) -> None:
        status, default = CODES[code]
        self.code, self.status = code, status
        self.message = message or default
        self.extra = extra  # more elements of the error document (BucketName, Key, ...)
        super().__init__(f"{code}: {self.message}")

    def document(self, resource: str, request_id: str) -> bytes:
        more = "".join(f"<{k}>{xml_text(str(v))}</{k}>" for k, v in self.extra.items())
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{xml_text(self.message)}</Message>"
            f"{more}<Resource>{xml_text(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()

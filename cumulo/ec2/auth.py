"""Who sent an EC2 Query request: the AWS signature (V4 header or query, V2) checked with
the EC2 credential's secret, and a project token from Identity's /v3/ec2tokens to call
the OpenStack APIs with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cumulo.common.aws_credentials import Credential, CredentialCache
from cumulo.common.identity_client import IdentityClient
from cumulo.ec2.errors import Ec2Error
from cumulo.identity import ec2_signature

MAX_SKEW = timedelta(minutes=15)  # AWS refuses requests signed further off than this


@dataclass
class SignedRequest:
    verb: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    fields: dict[str, str]  # the Query API parameters (query string and, on a POST, form)


def _refused(message: str = "AWS was not able to validate the provided access credentials"):
    return Ec2Error("AuthFailure", message)


def credentials_of(req: SignedRequest, region: str) -> dict[str, Any]:
    """The request taken apart as /v3/ec2tokens wants it."""
    authorization = req.headers.get("authorization", "")
    base = {"host": req.host, "verb": req.verb, "path": req.path, "headers": req.headers}
    if authorization.startswith(ec2_signature.V4_ALGORITHM):
        try:
            fields = ec2_signature.parse_v4_authorization(authorization)
        except ec2_signature.SignatureError as exc:
            raise _refused(str(exc)) from None
        scope = fields["Credential"].split("/")
        params = req.query
        signature = fields["Signature"]
    elif req.query.get("X-Amz-Algorithm") == ec2_signature.V4_ALGORITHM:
        # Presigned: the X-Amz-* parameters are the URL's, which the signature covers
        # (a POST's form is covered by its hash).
        scope = req.query.get("X-Amz-Credential", "").split("/")
        params = req.query
        signature = req.query.get("X-Amz-Signature", "")
    elif req.fields.get("SignatureVersion") == "2":
        access = req.fields.get("AWSAccessKeyId", "")
        if not access:
            raise Ec2Error(
                "MissingParameter", "The request must contain the parameter AWSAccessKeyId"
            )
        return {
            **base,
            "access": access,
            "signature": req.fields.get("Signature", ""),
            "params": req.fields,
        }
    else:
        raise Ec2Error(
            "AuthFailure", "The request carries no AWS signature (Signature Version 4 or 2)."
        )
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise _refused("The credential scope of the signature is malformed.")
    if scope[2] != region:
        raise _refused(f"Credential should be scoped to a valid region, not '{scope[2]}'.")
    return {
        **base,
        "access": scope[0],
        "signature": signature,
        "params": params,
        "body_hash": hashlib.sha256(req.body).hexdigest(),
    }


def _check_time(creds: dict[str, Any]) -> None:
    try:
        signed_at = ec2_signature.request_timestamp(creds)
    except ec2_signature.SignatureError as exc:
        raise _refused(str(exc)) from None
    now = datetime.now(UTC)
    if signed_at is not None and abs(now - signed_at) > MAX_SKEW:
        raise Ec2Error(
            "RequestExpired",
            f"Request has expired: signed at {signed_at:%Y-%m-%dT%H:%M:%SZ}, "
            f"now {now:%Y-%m-%dT%H:%M:%SZ}.",
        )
    expires = (creds.get("params") or {}).get("Expires")
    if expires:
        try:
            deadline = ec2_signature.parse_timestamp(str(expires))
        except ec2_signature.SignatureError as exc:
            raise _refused(str(exc)) from None
        if deadline is not None and now > deadline:
            raise Ec2Error("RequestExpired", "Request has expired.")


async def authenticate(
    req: SignedRequest, client: IdentityClient, cache: CredentialCache, region: str
) -> Credential:
    """The caller's credential, with a fresh project token; AuthFailure otherwise."""
    creds = credentials_of(req, region)
    cred = await cache.get(client, creds["access"])
    if cred is None or not cred.secret:
        raise _refused("AWS was not able to validate the provided access credentials")
    try:
        # As AWS signs: a POST's URL parameters are in its canonical query (its form in
        # the body's hash), so every parameter it carries is signed.
        valid = ec2_signature.verify_ec2(cred.secret, creds, post_query=True)
    except ec2_signature.SignatureError as exc:
        raise _refused(str(exc)) from None
    if not valid:
        raise _refused(
            "The request signature we calculated does not match the signature you provided."
        )
    _check_time(creds)
    if not cred.token_fresh():
        # Identity checks the signature again and says who may act (user and project
        # enabled, roles): the token the OpenStack API calls carry.
        token = await client.ec2_token(creds)
        if token is None:
            raise _refused()
        cred.keep_token(token)
    return cred

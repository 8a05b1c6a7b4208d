"""EC2 credentials (access key → secret, user, project) for the AWS-signed fronts (S3 on
the object store, the EC2 API), read from Identity with the service token and kept a
short while, as Swift's s3token keeps secrets: the front checks each signature itself,
and asks Identity for a project token (ec2tokens/s3tokens) only when its own expires."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from cumulo.common.identity_client import IdentityClient

SECRET_TTL = 60.0  # seconds a credential's secret is trusted before it is read again
TOKEN_TTL = 300.0  # seconds a project token for the credential is reused
_MAX_CACHED = 10000


@dataclass
class Credential:
    access: str
    secret: str
    project_id: str
    user_id: str
    deadline: float
    token: str | None = None
    token_deadline: float = 0.0

    def token_fresh(self) -> bool:
        return self.token is not None and self.token_deadline > time.monotonic()

    def keep_token(self, token: str) -> None:
        self.token, self.token_deadline = token, time.monotonic() + TOKEN_TTL


class CredentialCache:
    def __init__(self) -> None:
        self._credentials: dict[str, Credential] = {}

    async def get(self, client: IdentityClient, access: str) -> Credential | None:
        """The EC2 credential of an access key; None when there is none."""
        cached = self._credentials.get(access)
        now = time.monotonic()
        if cached is not None and cached.deadline > now:
            return cached
        found = await client.ec2_credential(access)
        if found is None or found.get("type") != "ec2":
            self._credentials.pop(access, None)
            return None
        blob = json.loads(found["blob"])
        cred = Credential(
            access, blob.get("secret", ""), found.get("project_id") or "", found["user_id"],
            now + SECRET_TTL,
        )  # fmt: skip
        if cached is not None and cached.secret == cred.secret:
            cred.token, cred.token_deadline = cached.token, cached.token_deadline
        if len(self._credentials) > _MAX_CACHED:
            self._credentials.clear()
        self._credentials[access] = cred
        return cred

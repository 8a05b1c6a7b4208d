"""Reading a secret's bytes from the Key Manager (Barbican v1), as castellan does for the
other services: `GET /v1/secrets/{id}/payload` with `Accept: application/octet-stream`,
with the token of the user the secret belongs to (or is shared with); and deleting a
secret whose data is gone (`DELETE /v1/secrets/{id}`, the deleting user's token)."""

from __future__ import annotations

from cumulo.common.service_client import ServiceClient, url_path


async def secret_payload(key_manager: ServiceClient, token: str, secret_id: str) -> bytes:
    """The secret's payload as it was stored; ServiceError as the Key Manager answered
    (404: no such secret, 403: not the caller's to read)."""
    response = await key_manager.request(
        "GET",
        url_path("/v1/secrets/{}/payload", secret_id),
        token,
        headers={"Accept": "application/octet-stream"},
        ok=(200,),
    )
    return response.content


async def delete_secret(key_manager: ServiceClient, token: str, secret_id: str) -> None:
    """Gone already is fine (a delete retried after a restart); other answers raise
    ServiceError (403: not the caller's to delete)."""
    await key_manager.request(
        "DELETE", url_path("/v1/secrets/{}", secret_id), token, ok=(200, 202, 204, 404)
    )

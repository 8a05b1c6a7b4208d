"""The compute host opens an encrypted volume with its key: Block Storage's encryption
metadata names the key, the Key Manager gives it, both asked with the user's token, and
the driver gets the key's hex as the passphrase (as Nova's encryptors make it). A key
that cannot be had fails the attach with a reason: never attached as if plain."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cumulo.common.service_client import ServiceError
from cumulo.compute.manager import ComputeManager
from cumulo.compute.virt.driver import BlockDevice, DriverError
from cumulo.compute.virt.fake import FakeDriver
from cumulo.compute.volume_encryption import with_encryption
from tests.unit.test_fake_driver import spec as fake_guest

KEY = bytes(range(32))
KEY_ID = "8e0a9c52-3c1a-4f3e-9d34-5a6c1b0e7f21"
METADATA = {
    "encryption_key_id": KEY_ID,
    "provider": "luks",
    "cipher": "aes-xts-plain64",
    "key_size": 256,
    "control_location": "front-end",
}


class StubVolumes:
    def __init__(self, metadata: dict[str, Any] | None = None, status: int = 200) -> None:
        self.metadata, self.status = metadata or METADATA, status
        self.calls: list[tuple[str, str, str, dict]] = []

    async def json(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, token, kwargs.get("headers") or {}))
        if self.status != 200:
            raise ServiceError("block-storage", self.status, '{"itemNotFound": {"message": "x"}}')
        return self.metadata


class StubKeyManager:
    def __init__(self, status: int = 200, body: bytes = KEY) -> None:
        self.status, self.body = status, body
        self.calls: list[tuple[str, str, str, dict]] = []

    async def request(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        self.calls.append((method, path, token, kwargs.get("headers") or {}))
        if self.status != 200:
            body = '{"code": 403, "title": "Forbidden", "description": "SecretACLs denied"}'
            raise ServiceError("key-manager", self.status, body)
        return httpx.Response(200, content=self.body)


def device(encrypted: bool = True) -> BlockDevice:
    data = {"path": "/srv/v1", "format": "luks" if encrypted else "raw", "encrypted": encrypted}
    return BlockDevice("vol-1", "/dev/vdb", {"driver_volume_type": "file", "data": data})


async def test_the_key_is_read_with_the_users_token_and_handed_over_as_its_hex():
    volumes, keys = StubVolumes(), StubKeyManager()
    opened = await with_encryption(volumes, keys, "user-token", device())
    assert opened.encryption is not None
    assert opened.encryption.provider == "luks"
    assert opened.encryption.passphrase == KEY.hex()
    assert (opened.encryption.cipher, opened.encryption.key_size) == ("aes-xts-plain64", 256)
    [(method, path, token, headers)] = volumes.calls
    assert (method, path, token) == ("GET", "/v3/volumes/vol-1/encryption", "user-token")
    assert headers["OpenStack-API-Version"].startswith("volume 3.")
    [(method, path, token, headers)] = keys.calls
    assert (method, path, token) == ("GET", f"/v1/secrets/{KEY_ID}/payload", "user-token")
    assert headers == {"Accept": "application/octet-stream"}


async def test_a_plain_volume_asks_nobody():
    volumes, keys = StubVolumes(), StubKeyManager()
    plain = device(encrypted=False)
    assert await with_encryption(volumes, keys, "t", plain) is plain
    assert volumes.calls == keys.calls == []


async def test_a_luks2_volume_is_handed_over_as_luks2_for_the_driver_to_judge():
    volumes = StubVolumes({**METADATA, "provider": "luks2"})
    opened = await with_encryption(volumes, StubKeyManager(), "t", device())
    assert opened.encryption is not None and opened.encryption.provider == "luks2"


@pytest.mark.parametrize(
    ("volumes", "keys", "reason"),
    [
        (StubVolumes(), None, "no Key Manager"),
        (StubVolumes(), StubKeyManager(status=403), r"Key Manager \(403\): SecretACLs denied"),
        (StubVolumes(), StubKeyManager(status=404), r"could not be read from the Key Manager"),
        (StubVolumes({"encryption_key_id": None}), StubKeyManager(), "names no key"),
        (StubVolumes(status=404), StubKeyManager(), r"from Block Storage \(404\)"),
        (StubVolumes({**METADATA, "provider": "rot13"}), StubKeyManager(), "unknown"),
        (StubVolumes({**METADATA, "control_location": "back-end"}), StubKeyManager(), "back-end"),
        (StubVolumes(), StubKeyManager(body=b""), "is empty"),
    ],
)
async def test_a_key_that_cannot_be_had_fails_with_the_reason(volumes, keys, reason):
    with pytest.raises(DriverError, match=reason):
        await with_encryption(volumes, keys, "t", device())


class StubConductor:
    """The conductor as the manager's attach calls it: what it was told, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return [] if name == "block_devices" else {}

        return call


class AttachingVolumes(StubVolumes):
    """Block Storage answering an attachment's connector with an encrypted volume."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    async def json(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        if path.startswith("/v3/attachments/"):
            self.requests.append((method, path))
            info = {"driver_volume_type": "file", "data": device().connection_info["data"]}
            return {"attachment": {"id": "att-1", "connection_info": info}}
        return await super().json(method, path, token, **kwargs)

    async def request(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        self.requests.append((method, path))
        return httpx.Response(204)


async def attach(key_manager: StubKeyManager | None):
    driver = FakeDriver("host1")
    guest = fake_guest("u1")
    await driver.spawn(guest)
    volumes = AttachingVolumes()
    manager = ComputeManager(
        "host1", driver, None, None, None, volumes=volumes, key_manager=key_manager
    )  # type: ignore[arg-type]
    manager.conductor = StubConductor()  # type: ignore[assignment]
    ctx = {"auth_token": "user-token", "request_id": "req-1"}
    await manager.attach_volume(ctx, "u1", "vol-1", "att-1", "/dev/vdb")
    return driver, volumes, manager.conductor


async def test_an_attached_encrypted_volume_reaches_the_driver_with_its_key():
    keys = StubKeyManager()
    driver, volumes, conductor = await attach(keys)
    assert driver.volume_encryptions("u1") == {"vol-1": "luks"}
    assert driver.guests["u1"].volumes["vol-1"].encryption.passphrase == KEY.hex()
    assert ("POST", "/v3/attachments/att-1/action") in volumes.requests  # completed
    assert "volume_attached" in [name for name, _, _ in conductor.calls]


async def test_an_encrypted_volume_whose_key_cannot_be_had_goes_back_to_available():
    driver, volumes, conductor = await attach(None)
    assert driver.guests["u1"].volumes == {}  # never attached as plain
    assert ("DELETE", "/v3/attachments/att-1") in volumes.requests
    assert ("POST", "/v3/attachments/att-1/action") not in volumes.requests
    names = [name for name, _, _ in conductor.calls]
    assert "volume_detached" in names and "volume_attached" not in names
    [finished] = [kw for name, _, kw in conductor.calls if kw.get("finish")]
    assert "no Key Manager" in finished["error"]

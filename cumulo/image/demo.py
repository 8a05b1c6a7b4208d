"""`cumulo up --with-demo-image`: the tiny test guest registered as public images.

Three images, as the QEMU driver boots them (tests/e2e/test_qemu_cloud.py):
`tiny-kernel` (aki), `tiny-ramdisk` (ari) and `tiny`, a small empty qcow2 root disk
whose `kernel_id`, `ramdisk_id` and `os_command_line` properties point at the other two.
The kernel and initramfs come from cumulo.testing.guest.build_guest() (two Debian
packages, downloaded once and cached). Registering is idempotent: an image that is
already active under its name is kept; a leftover that never became active (a start
that was interrupted) is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from cumulo.common.db import utcnow
from cumulo.identity.core import DEFAULT_DOMAIN_ID
from cumulo.identity.models import Project
from cumulo.image.core import ImageService
from cumulo.image.models import Image, ImageProperty
from cumulo.image.store import CHUNK

if TYPE_CHECKING:
    from cumulo.cloud import Cloud

LOG = logging.getLogger(__name__)

KERNEL, RAMDISK, ROOT = "tiny-kernel", "tiny-ramdisk", "tiny"
ROOT_SIZE = "16M"
DEMO_PROPERTY = "cumulo_demo"  # marks the images this module registered


class DemoImageError(Exception):
    """The demo image could not be built or registered (the cloud starts anyway)."""


async def register_demo_images(service: ImageService, owner: str) -> dict[str, str]:
    """Make sure the three demo images exist and are active; returns name -> image id."""
    from cumulo.testing.guest import build_guest

    try:
        guest = await asyncio.to_thread(build_guest)
    except Exception as exc:  # noqa: BLE001 - apt-get, network, dpkg: all reported alike
        raise DemoImageError(f"the tiny test guest could not be built: {exc}") from exc
    if shutil.which("qemu-img") is None:
        raise DemoImageError("qemu-img is needed to make the demo image's root disk")
    ids: dict[str, str] = {}
    ids[KERNEL] = await _ensure(service, owner, KERNEL, "aki", "aki", guest.kernel, {})
    ids[RAMDISK] = await _ensure(service, owner, RAMDISK, "ari", "ari", guest.initramfs, {})
    with tempfile.TemporaryDirectory(prefix="cumulo-demo-") as tmp:
        root = Path(tmp) / "root.qcow2"
        proc = await asyncio.to_thread(
            subprocess.run,
            ["qemu-img", "create", "-q", "-f", "qcow2", str(root), ROOT_SIZE],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise DemoImageError(f"qemu-img create failed: {proc.stderr.strip()[-300:]}")
        properties = {
            "kernel_id": ids[KERNEL],
            "ramdisk_id": ids[RAMDISK],
            "os_command_line": guest.command_line,
        }
        ids[ROOT] = await _ensure(service, owner, ROOT, "qcow2", "bare", root, properties)
    return ids


async def _ensure(
    service: ImageService,
    owner: str,
    name: str,
    disk_format: str,
    container_format: str,
    data: Path,
    properties: dict[str, str],
) -> str:
    async with service.db.read() as session:
        existing = (
            await session.scalars(
                select(Image)
                .join(ImageProperty, ImageProperty.image_id == Image.id)
                .where(Image.name == name, ImageProperty.name == DEMO_PROPERTY)
            )
        ).all()
    for image in existing:
        if image.status == "active":
            return image.id
    for image in existing:  # never became active: start over
        async with service.db.write() as session:
            await session.execute(delete(Image).where(Image.id == image.id))
        await service.delete_data(image)
    now = utcnow()
    image = Image(
        id=str(uuid.uuid4()),
        name=name,
        status="queued",
        visibility="public",
        owner=owner,
        disk_format=disk_format,
        container_format=container_format,
        protected=False,
        os_hidden=False,
        min_ram=0,
        min_disk=0,
        created_at=now,
        updated_at=now,
    )
    async with service.db.write() as session:
        session.add(image)
        await session.flush()
        session.add_all(
            ImageProperty(image_id=image.id, name=k, value=v)
            for k, v in {**properties, DEMO_PROPERTY: "true"}.items()
        )
    await service.upload(image, _chunks(data))
    LOG.info("demo image %s registered as %s", name, image.id)
    return image.id


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def register_for_cloud(cloud: Cloud) -> dict[str, str]:
    """The demo images of an all-in-one cloud, owned by the bootstrap `admin` project."""
    assert cloud.identity is not None and cloud.image is not None
    async with cloud.identity.read() as session:
        owner = await session.scalar(
            select(Project.id).where(
                Project.name == "admin", Project.domain_id == DEFAULT_DOMAIN_ID
            )
        )
    if owner is None:
        raise DemoImageError("the bootstrap project 'admin' does not exist")
    return await register_demo_images(cloud.image, owner)

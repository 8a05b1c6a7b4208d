"""Images from objects in S3: ImportImage (a disk file: qcow2, raw, vmdk, vhd, vdi) and
RegisterImage of a bundled AMI (`euca-bundle-image`: a manifest and encrypted parts), as
Nova's and ec2-api's S3 image service did. The work goes on in the background; the
image shows `pending` (ImportImage: the task shows `active`) until it is done."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import logging
import secrets
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import select

from cumulo.common.service_client import ServiceError, file_chunks, url_path
from cumulo.ec2 import certificate, filters
from cumulo.ec2.api import action
from cumulo.ec2.api.images import resolve_image
from cumulo.ec2.api.tags import set_tags, tag_set, tags_from_specs, tags_of
from cumulo.ec2.core import Ctx
from cumulo.ec2.errors import Ec2Error
from cumulo.ec2.models import ImportTask

LOG = logging.getLogger(__name__)
# EC2's import formats and what the Image service calls them.
DISK_FORMATS = {
    "qcow2": "qcow2",
    "raw": "raw",
    "img": "raw",
    "vmdk": "vmdk",
    "vhd": "vhd",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "iso": "iso",
}
MAX_MANIFEST = 1024 * 1024


def _object_path(ctx: Ctx, bucket: str, key: str) -> str:
    # A bucket is a container of the caller's project (the S3 API's mapping).
    return url_path("/v1/AUTH_{}/{}/{}", ctx.project_id, bucket, key)


def _s3_location(container: dict[str, Any]) -> tuple[str, str]:
    bucket = (container.get("UserBucket") or {}).get("S3Bucket")
    key = (container.get("UserBucket") or {}).get("S3Key")
    url = container.get("Url") or ""
    if not bucket and url.startswith("s3://"):
        bucket, _, key = url[5:].partition("/")
    if not bucket or not key:
        raise Ec2Error(
            "InvalidParameter",
            "A disk container needs UserBucket (S3Bucket, S3Key) or an s3:// Url.",
        )
    return bucket, key


async def _chunks(ctx: Ctx, path: str, service: str = "object-store") -> AsyncIterator[bytes]:
    """A streamed GET of another API (an object, an image's data) with the caller's token."""
    async with ctx.service.clients[service].stream(path, ctx.token) as response:
        async for chunk in response.aiter_bytes(1024 * 1024):
            yield chunk


async def _head_object(ctx: Ctx, bucket: str, key: str) -> None:
    try:
        await ctx.service.clients["object-store"].request(
            "HEAD", _object_path(ctx, bucket, key), ctx.token
        )
    except ServiceError as err:
        if err.status == 404:
            raise Ec2Error(
                "InvalidParameter", f"The object s3://{bucket}/{key} does not exist."
            ) from None
        raise Ec2Error(
            "InvalidParameter", f"The object s3://{bucket}/{key} cannot be read ({err.status})."
        ) from None


def _spawn(ctx: Ctx, coro) -> None:
    task = asyncio.create_task(coro)
    ctx.service.tasks.add(task)
    task.add_done_callback(ctx.service.tasks.discard)


async def _upload(ctx: Ctx, image_id: str, chunks: AsyncIterator[bytes]) -> None:
    await ctx.service.clients["image"].request(
        "PUT",
        url_path("/v2/images/{}/file", image_id),
        ctx.token,
        content=chunks,
        headers={"Content-Type": "application/octet-stream"},
    )


async def _discard_image(ctx: Ctx, image_id: str) -> None:
    try:
        await ctx.service.clients["image"].request(
            "DELETE", url_path("/v2/images/{}", image_id), ctx.token, ok=(204, 404)
        )
    except Exception:  # noqa: BLE001 - the task's failure is what gets reported
        LOG.exception("could not delete the failed image %s", image_id)


# -- ImportImage ------------------------------------------------------------------------


@action("ImportImage")
async def import_image(ctx: Ctx, p: dict[str, Any]) -> dict:
    containers = p.get("DiskContainers") or []
    if len(containers) != 1:
        raise Ec2Error("InvalidParameter", "ImportImage takes exactly one disk container.")
    bucket, key = _s3_location(containers[0])
    raw_format = (containers[0].get("Format") or key.rsplit(".", 1)[-1]).lower()
    disk_format = DISK_FORMATS.get(raw_format)
    if disk_format is None:
        raise Ec2Error(
            "InvalidParameter",
            f"Unsupported disk format '{raw_format}': one of {', '.join(sorted(DISK_FORMATS))}.",
        )
    await _head_object(ctx, bucket, key)
    task_id = f"import-ami-{secrets.token_hex(9)[:17]}"
    body = {
        "name": p.get("Description") or key.rsplit("/", 1)[-1],
        "disk_format": disk_format,
        "container_format": "bare",
        "visibility": "private",
        "image_location": f"{bucket}/{key}",
    }
    if p.get("Architecture"):
        body["architecture"] = p["Architecture"]
    image = await ctx.image(
        "POST", "/v2/images", json=body, errors={"quota": "ResourceLimitExceeded"}
    )
    ami = await ctx.ids.ec2_id("ami", image["id"], ctx.project_id)
    detail = {
        "Format": raw_format.upper(),
        "UserBucket": {"S3Bucket": bucket, "S3Key": key},
        "Description": containers[0].get("Description") or "",
    }
    task = ImportTask(
        id=task_id,
        project_id=ctx.project_id,
        status="active",
        status_message="pending",
        progress="0",
        description=p.get("Description") or "",
        image_id=ami,
        data=json.dumps(detail),
    )
    await ctx.service.db.run_write(lambda s: s.add(task))
    await set_tags(ctx, [task_id], tags_from_specs(p.get("TagSpecifications"), "import-image-task"))
    _spawn(ctx, _run_import(ctx, task_id, image["id"], bucket, key))
    return {
        "ImportTaskId": task_id,
        "Status": "active",
        "StatusMessage": "pending",
        "Progress": "0",
        "Description": task.description,
        "ImageId": ami,
        "SnapshotDetails": [detail],
    }


async def _set_task(ctx: Ctx, task_id: str, **values: Any) -> None:
    def write(s) -> None:
        row = s.get(ImportTask, task_id)
        for k, v in values.items():
            setattr(row, k, v)

    await ctx.service.db.run_write(write)


async def _run_import(ctx: Ctx, task_id: str, image_id: str, bucket: str, key: str) -> None:
    try:
        await _set_task(ctx, task_id, status_message="converting", progress="20")
        await _upload(ctx, image_id, _chunks(ctx, _object_path(ctx, bucket, key)))
        await _set_task(ctx, task_id, status="completed", status_message="", progress="100")
    except Exception as exc:  # noqa: BLE001 - any failure ends the task, with its reason
        message = exc.body[:200] if isinstance(exc, ServiceError) else str(exc)[:200]
        LOG.warning("import task %s failed: %s", task_id, message)
        await _discard_image(ctx, image_id)
        await _set_task(ctx, task_id, status="deleted", status_message=f"ClientError: {message}")


@action("DescribeImportImageTasks")
async def describe_import_image_tasks(ctx: Ctx, p: dict[str, Any]) -> dict:
    wanted = filters.check(p.get("Filters"), ("task-state",))

    def read(s) -> list[ImportTask]:
        return list(
            s.scalars(
                select(ImportTask)
                .where(ImportTask.project_id == ctx.project_id)
                .order_by(ImportTask.created_at)
            )
        )

    tasks = await ctx.service.db.run_read(read)
    ids = p.get("ImportTaskIds") or []
    for task_id in ids:
        if task_id not in {t.id for t in tasks}:
            raise Ec2Error(
                "InvalidConversionTaskId.Malformed", f"The import task '{task_id}' does not exist"
            )
    tags = await tags_of(ctx, [t.id for t in tasks])
    out = []
    for t in tasks:
        if ids and t.id not in ids:
            continue
        if not filters.matches(wanted, {"task-state": t.status}, tags.get(t.id, {})):
            continue
        d: dict[str, Any] = {
            "ImportTaskId": t.id,
            "Status": t.status,
            "StatusMessage": t.status_message,
            "Progress": t.progress,
            "Description": t.description,
            "SnapshotDetails": [json.loads(t.data)] if t.data else [],
            "Tags": tag_set(tags.get(t.id)),
        }
        if t.status != "deleted":
            d["ImageId"] = t.image_id
        out.append(d)
    return {"ImportImageTasks": out}


# -- bundled AMIs -----------------------------------------------------------------------


def _text(root: ElementTree.Element, path: str) -> str | None:
    node = root.find(path)
    return node.text.strip() if node is not None and node.text else None


async def register_bundle(ctx: Ctx, p: dict[str, Any]) -> dict:
    """RegisterImage of `bucket/prefix.manifest.xml`: the image record at once, its disk
    decrypted and unpacked from the parts in the background."""
    location = p["ImageLocation"].lstrip("/")
    bucket, _, manifest_key = location.partition("/")
    if not manifest_key:
        raise Ec2Error("InvalidManifest", "ImageLocation is bucket/path-to.manifest.xml.")
    try:
        answer = await ctx.service.clients["object-store"].request(
            "GET", _object_path(ctx, bucket, manifest_key), ctx.token
        )
    except ServiceError as err:
        raise Ec2Error(
            "InvalidManifest", f"The manifest {location} cannot be read ({err.status})."
        ) from None
    if len(answer.content) > MAX_MANIFEST:
        raise Ec2Error("InvalidManifest", "The manifest is too large.")
    try:
        manifest = ElementTree.fromstring(answer.content)
    except ElementTree.ParseError as exc:
        raise Ec2Error("InvalidManifest", f"The manifest is not XML: {exc}") from None
    key_hex, iv_hex = (
        _text(manifest, "image/ec2_encrypted_key"),
        _text(manifest, "image/ec2_encrypted_iv"),
    )
    parts = [
        (int(part.get("index", "0")), _text(part, "filename"), _text(part, "digest"))
        for part in manifest.findall("image/parts/part")
    ]
    if not key_hex or not iv_hex or not parts or any(not name for _, name, _ in parts):
        raise Ec2Error(
            "InvalidManifest", "The manifest has no ec2_encrypted_key, ec2_encrypted_iv or parts."
        )
    try:
        aes_key = bytes.fromhex(
            certificate.decrypt(ctx.service.state_dir, bytes.fromhex(key_hex)).decode()
        )
        aes_iv = bytes.fromhex(
            certificate.decrypt(ctx.service.state_dir, bytes.fromhex(iv_hex)).decode()
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Ec2Error(
            "InvalidManifest",
            "The bundle was not encrypted to this cloud's EC2 "
            "certificate (GET /cloud-cert.pem on the EC2 endpoint).",
        ) from None
    props: dict[str, Any] = {}
    for param, tag, kinds in (
        ("KernelId", "kernel_id", ("aki",)),
        ("RamdiskId", "ramdisk_id", ("ari",)),
    ):
        ec2_id = p.get(param) or _text(manifest, f"machine_configuration/{tag}")
        if ec2_id and ec2_id != "true":
            props[tag] = (await resolve_image(ctx, ec2_id, kinds))["id"]
    arch = p.get("Architecture") or _text(manifest, "machine_configuration/architecture")
    body = {
        "name": p.get("Name") or manifest_key.rsplit("/", 1)[-1].removesuffix(".manifest.xml"),
        "disk_format": "ami",
        "container_format": "ami",
        "visibility": "private",
        "image_location": location,
        **props,
    }
    if arch:
        body["architecture"] = arch
    if p.get("Description"):
        body["description"] = p["Description"]
    image = await ctx.image(
        "POST", "/v2/images", json=body, errors={"quota": "ResourceLimitExceeded"}
    )
    ami = await ctx.ids.ec2_id("ami", image["id"], ctx.project_id)
    folder = manifest_key.rsplit("/", 1)[0] + "/" if "/" in manifest_key else ""
    names = [(folder + name, digest) for _, name, digest in sorted(parts)]
    _spawn(ctx, _unbundle(ctx, image["id"], bucket, names, aes_key, aes_iv))
    return {"ImageId": ami}


async def _unbundle(
    ctx: Ctx, image_id: str, bucket: str, parts: list, key: bytes, iv: bytes
) -> None:
    """Parts → (digests checked) → AES-128-CBC decrypted → gunzipped → untarred → image."""
    work = Path(tempfile.mkdtemp(prefix="ec2-bundle-", dir=ctx.service.state_dir))
    try:
        tarball = work / "image.tar"
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = sym_padding.PKCS7(128).unpadder()
        gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        with tarball.open("wb") as out:
            for name, digest in parts:
                sha1 = hashlib.sha1()  # noqa: S324 - the bundle format's part digest
                async for chunk in _chunks(ctx, _object_path(ctx, bucket, name)):
                    sha1.update(chunk)
                    out.write(gunzip.decompress(unpadder.update(decryptor.update(chunk))))
                if digest and sha1.hexdigest() != digest.lower():
                    raise ValueError(f"part {name} does not match its digest")
            out.write(
                gunzip.decompress(unpadder.update(decryptor.finalize()) + unpadder.finalize())
            )
            out.write(gunzip.flush())
        disk = await asyncio.to_thread(_untar_one, tarball, work)
        await _upload(ctx, image_id, file_chunks(str(disk)))
    except Exception as exc:  # noqa: BLE001 - any failure kills the image, as Glance shows it
        LOG.warning("bundle of image %s could not be registered: %s", image_id, exc)
        await _discard_image(ctx, image_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _untar_one(tarball: Path, work: Path) -> Path:
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        if len(members) != 1:
            raise ValueError("a bundle holds one image file")
        target = work / "disk"
        source = tar.extractfile(members[0])
        assert source is not None
        with target.open("wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
    return target


# -- CopyImage, RegisterImage of a snapshot ---------------------------------------------

# What a copy keeps of its source besides the disk (the rest is the Image service's own).
_COPIED = (
    "kernel_id",
    "ramdisk_id",
    "os_command_line",
    "architecture",
    "hw_architecture",
    "os_distro",
    "os_version",
    "hw_disk_bus",
    "hw_qemu_guest_agent",
    "root_device_name",
)


async def copy_image_data(
    ctx: Ctx, source: dict[str, Any], name: str, description: str | None
) -> str:
    body = {
        "name": name,
        "disk_format": source["disk_format"],
        "visibility": "private",
        "container_format": source["container_format"],
        "min_disk": source.get("min_disk") or 0,
        "min_ram": source.get("min_ram") or 0,
        "image_location": f"copy of {source['id']}",
        **{k: source[k] for k in _COPIED if source.get(k)},
    }
    if description:
        body["description"] = description
    image = await ctx.image(
        "POST", "/v2/images", json=body, errors={"quota": "ResourceLimitExceeded"}
    )

    async def copy() -> None:
        try:
            await _upload(
                ctx,
                image["id"],
                _chunks(ctx, url_path("/v2/images/{}/file", source["id"]), "image"),
            )
        except Exception as exc:  # noqa: BLE001 - the copy fails; its image goes
            LOG.warning("copy of image %s failed: %s", source["id"], exc)
            await _discard_image(ctx, image["id"])

    _spawn(ctx, copy())
    return image["id"]


async def image_from_snapshot(ctx: Ctx, snapshot_id: str, name: str, props: dict[str, Any]) -> str:
    """A volume from the snapshot, uploaded to a new image by Block Storage, then deleted."""
    os_snapshot = await ctx.ids.os_id(snapshot_id, "snap")
    volume = (
        await ctx.volume(
            "POST",
            "/volumes",
            json={"volume": {"snapshot_id": os_snapshot, "name": f"ec2-register-{snapshot_id}"}},
            errors={"not_found": "InvalidSnapshot.NotFound", "quota": "VolumeLimitExceeded"},
        )
    )["volume"]
    try:
        for _ in range(600):
            volume = (await ctx.volume("GET", f"/volumes/{volume['id']}"))["volume"]
            if volume["status"] != "creating":
                break
            await asyncio.sleep(0.1)
        if volume["status"] != "available":
            raise Ec2Error(
                "InvalidSnapshot",
                f"The snapshot {snapshot_id} could not be read (its volume is {volume['status']}).",
            )
        answer = await ctx.volume(
            "POST",
            f"/volumes/{volume['id']}/action",
            json={
                "os-volume_upload_image": {
                    "image_name": name,
                    "disk_format": "raw",
                    "container_format": "bare",
                }
            },
        )
        image_id = answer["os-volume_upload_image"]["image_id"]
    except BaseException:
        await _delete_volume_later(ctx, volume["id"])
        raise
    ops = [{"op": "add", "path": f"/{k}", "value": v} for k, v in props.items()]
    await ctx.image(
        "PATCH",
        url_path("/v2/images/{}", image_id),
        json=ops,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    _spawn(ctx, _delete_volume_later(ctx, volume["id"]))
    return image_id


async def _delete_volume_later(ctx: Ctx, volume_id: str, timeout: float = 600.0) -> None:
    """Delete the work volume once it is no longer busy (uploading to the image)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            volume = (await ctx.volume("GET", f"/volumes/{volume_id}"))["volume"]
        except Ec2Error:
            return
        if volume["status"] in ("available", "error"):
            await ctx.volume("DELETE", f"/volumes/{volume_id}")
            return
        await asyncio.sleep(0.5)
    LOG.warning("work volume %s of RegisterImage left behind: still busy", volume_id)

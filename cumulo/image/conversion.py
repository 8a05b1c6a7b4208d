"""Glance's image conversion import plugin (`[image] import_plugins = ["image_conversion"]`).

Imported data (glance-direct, web-download, glance-download; never copy-image) is
checked as inspect.py checks any upload, then `qemu-img convert -f <format> -O
<[image.image_conversion] output_format>` rewrites it in the staging area before it is
stored; the image then has the output disk_format and container_format `bare`. As in
Glance (glance/async_/flows/plugins/image_conversion.py), ISO images keep their format
and must really be ISO 9660/UDF, and ISO data declared as another format is refused.
ami/ari/aki (raw kernels, ramdisks and machine images of the EC2 layout) keep their
format too, where Glance fails their import. Data already in the output format is kept.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cumulo.common.config import ImageConfig
from cumulo.common.faults import PayloadTooLarge
from cumulo.image import inspect
from cumulo.image.inspect import EXPECTED_FORMAT, ImageRejected

PLUGIN = "image_conversion"
# Raw data whose disk_format says what it is for (EC2's layout): never rewritten.
EC2_FORMATS = {"ami", "ari", "aki"}
# ISO 9660 and UDF volume descriptors, after 16 system sectors of 2048 bytes.
ISO_SIGNATURE_AT = 32 * 1024 + 1
ISO_SIGNATURES = (b"CD001", b"NSR02", b"NSR03")


def enabled(cfg: ImageConfig) -> bool:
    return PLUGIN in cfg.import_plugins


def _looks_like_iso(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(ISO_SIGNATURE_AT)
        return f.read(5) in ISO_SIGNATURES


async def convert_staged(staged: Path, disk_format: str, cfg: ImageConfig, room: int) -> str | None:
    """Convert the staged data in place; the new disk_format, or None when it is kept.

    room: the bytes the converted data may take (size limit and quota left). Raises
    ImageRejected when the data is not what disk_format says or is unsafe, and
    PayloadTooLarge when the converted image would not fit.
    """
    is_iso = await asyncio.to_thread(_looks_like_iso, staged)
    if disk_format == "iso" or is_iso:
        if disk_format != "iso":
            raise ImageRejected(
                f"Image has disallowed configuration: ISO data declared as {disk_format}."
            )
        if not is_iso:
            raise ImageRejected("Image format mismatch: the data declared iso is not ISO 9660/UDF.")
        return None
    # The checks every upload passes (format matches, no backing or data file, safe VMDK).
    found = await inspect.inspect(staged, disk_format, cfg.inspect_timeout, cfg.inspect_memory)
    if found.format != EXPECTED_FORMAT.get(disk_format):  # formats qemu-img cannot judge
        raise ImageRejected(
            f"Image format mismatch: the data is {found.format}, not {disk_format}."
        )
    output = cfg.image_conversion.output_format
    if disk_format in EC2_FORMATS or found.format == output:
        return None
    # Raw output is as large as the virtual disk: refuse before writing it.
    if output == "raw" and found.virtual_size > room:
        raise PayloadTooLarge(
            f"Image converted to raw would be {found.virtual_size} bytes: over the size "
            f"limit or storage quota ({room} bytes left)."
        )
    converted = staged.with_name(f"{staged.name}.{output}")
    try:
        await inspect.run_qemu_img(
            "convert", "-f", found.format, "-O", output, str(staged), str(converted),
            timeout=cfg.image_conversion.timeout, memory=cfg.inspect_memory, what="converted",
        )  # fmt: skip
        size = (await asyncio.to_thread(os.stat, converted)).st_size
        if size > room:
            raise PayloadTooLarge(
                f"Image converted to {output} is {size} bytes: over the size limit or "
                f"storage quota ({room} bytes left)."
            )
        await asyncio.to_thread(os.replace, converted, staged)
    finally:
        await asyncio.to_thread(converted.unlink, missing_ok=True)
    return output

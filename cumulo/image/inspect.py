"""Inspecting uploaded image data with `qemu-img info` before it is accepted.

The data must be what its declared disk_format says (a qcow2 declared as raw
would let a guest read host files through its backing file), and qcow2/vmdk
images must not reference any other file (backing file, external data file,
extra extents). The format is first recognised from the header here, so
qemu-img never probes (a VMDK descriptor would make it open the files it names);
then `qemu-img info -f <format>` checks the image structure. qemu-img runs off
the event loop, in its own process, with a timeout and an address-space limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.common.faults import BadRequest, ServiceUnavailable

# disk_format -> the format qemu-img detects for such data.
EXPECTED_FORMAT = {
    "raw": "raw",
    "iso": "raw",
    "ami": "raw",
    "ari": "raw",
    "aki": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "ploop": "parallels",
}
# Formats qemu-img cannot judge: accepted as declared.
UNCHECKED = {"ploop"}
SAFE_VMDK_TYPES = {"monolithicSparse", "streamOptimized"}


@dataclass(frozen=True)
class Inspection:
    format: str
    virtual_size: int


class ImageRejected(BadRequest):
    """The data is not acceptable for its declared disk format."""


def _limits(memory: int, cpu_seconds: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    return apply


def sniff(header: bytes) -> str:
    """The qemu format name of data, from its first bytes (as qemu's probes read them)."""
    if header.startswith(b"QFI\xfb"):
        return "qcow2"
    if header.startswith(b"KDMV") or header.startswith(b"COWD"):
        return "vmdk"
    if header.startswith(b"# Disk DescriptorFile") or b"createType=" in header:
        return "vmdk-descriptor"
    if header.startswith(b"conectix"):
        return "vpc"
    if header.startswith(b"vhdxfile"):
        return "vhdx"
    if header[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if header.startswith((b"WithoutFreeSpace", b"WithouFreSpacExt")):
        return "parallels"
    return "raw"


async def run_qemu_img(*args: str, timeout: float, memory: int, what: str) -> bytes:
    """qemu-img's output, run in its own process with a timeout and an address-space
    limit (killed when the caller is cancelled); ImageRejected when it fails."""
    binary = shutil.which("qemu-img")
    if binary is None:
        raise ServiceUnavailable(f"qemu-img is not installed: image data cannot be {what}.")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_limits(memory, int(timeout) + 1),
        env={"LC_ALL": "C"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise ImageRejected(
            f"Image data could not be {what}: qemu-img timed out after {timeout:g} seconds."
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ImageRejected(f"Image data could not be {what}: {reason[0]}")
    return out


async def qemu_img_info(path: Path, fmt: str, timeout: float, memory: int) -> dict[str, Any]:
    out = await run_qemu_img(
        "info", "--output=json", "--force-share", "-f", fmt, str(path),
        timeout=timeout, memory=memory, what="inspected",
    )  # fmt: skip
    try:
        return json.loads(out)
    except ValueError:
        raise ImageRejected("Image data could not be inspected.") from None


def judge(info: dict[str, Any], disk_format: str) -> Inspection:
    """Accept the qemu-img view of the data for disk_format, or raise ImageRejected."""
    detected = str(info.get("format", ""))
    expected = EXPECTED_FORMAT.get(disk_format)
    if disk_format not in UNCHECKED and expected != detected:
        raise _mismatch(disk_format, detected)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRejected("Images that reference a backing file are not allowed.")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageRejected("Images that reference an external data file are not allowed.")
    if detected == "vmdk":
        create_type = specific.get("create-type")
        extents = specific.get("extents") or []
        if create_type not in SAFE_VMDK_TYPES or len(extents) > 1:
            raise ImageRejected(
                f"VMDK images of type {create_type or 'unknown'} are not allowed: "
                "only monolithicSparse and streamOptimized."
            )
    return Inspection(detected, int(info.get("virtual-size") or 0))


async def inspect(path: Path, disk_format: str, timeout: float, memory: int) -> Inspection:
    header = await asyncio.to_thread(_read_header, path)
    detected = sniff(header)
    if detected == "vmdk-descriptor":
        raise ImageRejected("VMDK descriptor files reference other files and are not allowed.")
    expected = EXPECTED_FORMAT.get(disk_format)
    if disk_format not in UNCHECKED and detected != expected:
        raise _mismatch(disk_format, detected)
    return judge(await qemu_img_info(path, detected, timeout, memory), disk_format)


def _read_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(1024)


def _mismatch(disk_format: str, detected: str) -> ImageRejected:
    return ImageRejected(
        f"Image data does not match disk_format {disk_format}: it is {detected or 'unknown'}."
    )

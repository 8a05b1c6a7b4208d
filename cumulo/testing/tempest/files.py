"""Test image files: served over loopback HTTP for the `web-download` import tests
(Tempest's `[image] http_image` / `http_qcow2_image`), and described in a manifest of
disk formats for the format tests (`[image] images_manifest_file`): images of each
format qemu-img writes, which the Image service must accept, and unsafe ones (a qcow2
with a backing file, a VMDK descriptor naming another file) it must not."""

from __future__ import annotations

import functools
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass


class FileServer:
    def __init__(self, directory: Path, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "image.qcow2"), "16M"],
            check=True,
        )
        self.manifest = write_format_images(directory / "formats")
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# (name, disk_format, qemu-img create arguments, usable)
FORMAT_IMAGES = [
    ("raw", "raw", ["-f", "raw"], True),
    ("qcow2", "qcow2", ["-f", "qcow2"], True),
    ("vmdk-sparse", "vmdk", ["-f", "vmdk", "-o", "subformat=monolithicSparse"], True),
    ("vmdk-stream", "vmdk", ["-f", "vmdk", "-o", "subformat=streamOptimized"], True),
    ("vhd", "vhd", ["-f", "vpc"], True),
    ("vhdx", "vhdx", ["-f", "vhdx"], True),
    ("vdi", "vdi", ["-f", "vdi"], True),
    ("qcow2-backing-file", "qcow2", ["-f", "qcow2", "-F", "raw", "-b", "raw.img"], False),
    ("vmdk-flat-descriptor", "vmdk", ["-f", "vmdk", "-o", "subformat=monolithicFlat"], False),
]


def write_format_images(directory: Path) -> Path:
    """The images and their manifest.yaml (the layout of openstack/os-test-images)."""
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for name, fmt, args, usable in FORMAT_IMAGES:
        filename = f"{name}.img"
        cmd = ["qemu-img", "create", "-q", *args, filename, "1M"]
        subprocess.run(cmd, check=True, cwd=directory)
        images.append({"name": name, "format": fmt, "filename": filename, "usable": usable})
    manifest = directory / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"images": images}))
    return manifest

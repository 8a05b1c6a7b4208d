"""The image conversion import plugin, as an operator who keeps every image raw sees it:
what users import (glance-direct with the openstack CLI and openstacksdk, web-download)
is stored as raw with its own size and hashes and the same guest-visible disk, ISO images
stay ISO, unsafe or mislabelled data fails the import with nothing stored, and uploads,
copy-image and a cloud without the plugin keep the data as it is."""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pycdlib
import pytest

from cumulo.common.config import (
    ImageConversionConfig,
    ImageStoreConfig,
    WebDownloadConfig,
    load_config,
    write_config,
)
from tests.cloudrunner import CloudRunner, configure_state_dir, free_port

VIRTUAL_SIZE = 8 << 20


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> Path:
    """A raw disk with data at a few offsets, and the same disk as qcow2 and VMDKs; a
    qcow2 on a backing file; an empty 2 TiB qcow2; an ISO 9660 image."""
    root = tmp_path_factory.mktemp("disks")
    raw = root / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(VIRTUAL_SIZE)
        for offset in (0, 1 << 20, VIRTUAL_SIZE - 4096):
            f.seek(offset)
            f.write(f"guest data at {offset}".encode() * 64)

    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, cwd=root)

    qemu_img("convert", "-f", "raw", "-O", "qcow2", "disk.raw", "disk.qcow2")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
             "disk.raw", "stream.vmdk")  # fmt: skip
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "disk.raw", "sparse.vmdk")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "disk.raw", "backed.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "huge.qcow2", "2T")  # past max_image_size as raw
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="INSTALL")
    content = b"an installer\n" * 100
    iso.add_fp(io.BytesIO(content), len(content), "/README.;1", joliet_path="/README")
    iso.write(str(root / "install.iso"))
    iso.close()
    return root


@pytest.fixture(scope="module")
def web(disks):
    """A loopback web server over the disks, where web-download fetches from."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(_Quiet, directory=str(disks))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _cloud(state: Path, **settings) -> CloudRunner:
    """A started cloud that converts imports, with these `[image]` settings."""
    configure_state_dir(state)
    config = load_config(state)
    config.image.import_plugins = ["image_conversion"]
    for name, value in settings.items():
        setattr(config.image, name, value)
    write_config(state, config)
    return CloudRunner(state).start()


@pytest.fixture(scope="module")
def converting(tmp_path_factory, web):
    """A cloud with `[image] import_plugins = ["image_conversion"]` (output raw) and two
    stores."""
    runner = _cloud(
        tmp_path_factory.mktemp("image-conversion"),
        stores=[ImageStoreConfig(id="fast"), ImageStoreConfig(id="second")],
        web_download=WebDownloadConfig(allowed_ports=[int(web.rsplit(":", 1)[1])]),
    )
    yield runner
    runner.stop()


def _glance(cloud: CloudRunner) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": cloud.token()},
        timeout=60,
    )


@pytest.fixture(scope="module")
def glance(converting):
    with _glance(converting) as client:
        yield client


def _name() -> str:
    return f"conv-{uuid.uuid4().hex[:8]}"


def _import(glance: httpx.Client, path: Path, disk_format: str) -> str:
    """A new image, path staged and imported with glance-direct."""
    body = {"name": _name(), "disk_format": disk_format, "container_format": "bare"}
    image_id = glance.post("/v2/images", json=body).json()["id"]
    staged = glance.put(
        f"/v2/images/{image_id}/stage",
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert staged.status_code == 204, staged.text
    imported = glance.post(
        f"/v2/images/{image_id}/import", json={"method": {"name": "glance-direct"}}
    )
    assert imported.status_code == 202, imported.text
    return image_id


def _finished(glance: httpx.Client, image_id: str) -> tuple[dict, dict]:
    """The image and its last import task, once that task has ended."""
    deadline = time.monotonic() + 60
    while True:
        tasks = glance.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
        if tasks and tasks[-1]["status"] in ("success", "failure"):
            return glance.get(f"/v2/images/{image_id}").json(), tasks[-1]
        assert time.monotonic() < deadline, tasks
        time.sleep(0.2)


def _download(glance: httpx.Client, image_id: str, path: Path) -> bytes:
    data = glance.get(f"/v2/images/{image_id}/file").content
    path.write_bytes(data)
    return data


def _same_disk(a: Path, a_format: str, b: Path, b_format: str) -> bool:
    compare = ["qemu-img", "compare", "-q", "-f", a_format, "-F", b_format, str(a), str(b)]
    return subprocess.run(compare).returncode == 0


def _assert_describes(image: dict, data: bytes) -> None:
    assert image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()


def _leftovers(cloud: CloudRunner, image_id: str) -> list[Path]:
    """Files of the image in the stores or the staging area."""
    roots = [cloud.state_dir / "images" / "fast", cloud.state_dir / "images" / "second"]
    roots.append(cloud.state_dir / "images-staging")
    return [p for root in roots for p in root.glob(f"{image_id}*")]


def test_a_qcow2_imported_with_the_cli_is_stored_as_raw(converting, glance, disks, tmp_path):
    source = disks / "disk.qcow2"
    # --progress: the client then does not compare the image's checksum with the file's
    # right after the import request (which would race with the conversion).
    created = converting.openstack(
        "image", "create", "--import", "--disk-format", "qcow2", "--container-format", "bare",
        "--file", str(source), "--progress", _name(), "-f", "json",
    )  # fmt: skip
    image, task = _finished(glance, created["id"])
    assert task["status"] == "success", task
    assert image["status"] == "active"
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    data = _download(glance, image["id"], tmp_path / "stored.raw")
    _assert_describes(image, data)
    assert image["size"] == image["virtual_size"] == VIRTUAL_SIZE
    assert image["os_glance_importing_to_stores"] == "" and image["os_glance_failed_import"] == ""
    # The guest sees the same disk.
    assert _same_disk(source, "qcow2", tmp_path / "stored.raw", "raw")
    # Nothing of the qcow2 is left in staging.
    assert not list((converting.state_dir / "images-staging").glob(f"{image['id']}*"))
    shown = converting.openstack("image", "show", image["id"], "-f", "json")
    assert shown["disk_format"] == "raw" and shown["checksum"] == image["checksum"]


def test_vmdks_imported_with_the_sdk_and_from_a_url_are_stored_as_raw(
    converting, glance, disks, web, tmp_path
):
    conn = converting.sdk()
    sdk_image = conn.image.create_image(
        _name(),
        filename=str(disks / "stream.vmdk"),
        disk_format="vmdk",
        container_format="bare",
        use_import=True,
        import_method="glance-direct",
        validate_checksum=False,  # the stored data is not the file's: it was converted
    )
    body = {"name": _name(), "disk_format": "vmdk", "container_format": "bare"}
    url_image = glance.post("/v2/images", json=body).json()["id"]
    method = {"method": {"name": "web-download", "uri": f"{web}/sparse.vmdk"}}
    assert glance.post(f"/v2/images/{url_image}/import", json=method).status_code == 202
    for image_id, source in ((sdk_image.id, "stream.vmdk"), (url_image, "sparse.vmdk")):
        image, task = _finished(glance, image_id)
        assert task["status"] == "success", (source, task)
        assert (image["status"], image["disk_format"]) == ("active", "raw")
        data = _download(glance, image_id, tmp_path / f"{source}.raw")
        _assert_describes(image, data)
        assert image["virtual_size"] == VIRTUAL_SIZE
        assert _same_disk(disks / source, "vmdk", tmp_path / f"{source}.raw", "raw"), source
    assert conn.image.get_image(sdk_image.id).disk_format == "raw"


def test_isos_and_ec2_kernels_keep_their_format(converting, glance, disks):
    for file, disk_format in (("install.iso", "iso"), ("disk.raw", "aki")):
        data = (disks / file).read_bytes()
        image, task = _finished(glance, _import(glance, disks / file, disk_format))
        assert task["status"] == "success", task
        assert (image["status"], image["disk_format"]) == ("active", disk_format)
        _assert_describes(image, data)
        assert glance.get(f"/v2/images/{image['id']}/file").content == data


@pytest.mark.parametrize(
    ("file", "disk_format", "reason"),
    [
        ("backed.qcow2", "qcow2", "backing file"),  # would read a host file
        ("disk.raw", "qcow2", "does not match disk_format qcow2"),
        ("disk.qcow2", "raw", "does not match disk_format raw"),
        ("disk.qcow2", "iso", "not ISO 9660"),
        ("install.iso", "raw", "ISO data declared as raw"),
        ("huge.qcow2", "qcow2", "converted to raw would be"),
    ],
)
def test_unsafe_or_mislabelled_data_fails_the_import_and_nothing_is_stored(
    converting, glance, disks, file, disk_format, reason
):
    image_id = _import(glance, disks / file, disk_format)
    image, task = _finished(glance, image_id)
    assert task["status"] == "failure" and reason in task["message"], task
    # Back to queued as Glance leaves it: the store recorded as failed, no data or hashes.
    assert image["status"] == "queued"
    assert image["disk_format"] == disk_format
    assert image["os_glance_failed_import"] == "fast"
    assert image["os_glance_importing_to_stores"] == ""
    assert image["size"] is None and image["checksum"] is None and "stores" not in image
    assert glance.get(f"/v2/images/{image_id}/file").status_code == 204
    assert _leftovers(converting, image_id) == []
    # Queued again: its data may be staged anew.
    restaged = glance.put(
        f"/v2/images/{image_id}/stage",
        content=(disks / file).read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert restaged.status_code == 204


def test_uploads_and_copy_image_are_not_converted(converting, glance, disks):
    # The plugin acts on imports only (as Glance's): PUT /file keeps the qcow2.
    data = (disks / "disk.qcow2").read_bytes()
    body = {"name": _name(), "disk_format": "qcow2", "container_format": "bare"}
    image_id = glance.post("/v2/images", json=body).json()["id"]
    put = glance.put(
        f"/v2/images/{image_id}/file",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 204
    copy = {"method": {"name": "copy-image"}, "stores": ["second"]}
    assert glance.post(f"/v2/images/{image_id}/import", json=copy).status_code == 202
    image, task = _finished(glance, image_id)
    assert task["status"] == "success", task
    assert image["stores"] == "fast,second" and image["disk_format"] == "qcow2"
    _assert_describes(image, data)
    assert (converting.state_dir / "images" / "second" / image_id).read_bytes() == data


def test_without_the_plugin_imports_keep_their_format(cloud: CloudRunner, disks):
    with _glance(cloud) as plain:
        image, task = _finished(plain, _import(plain, disks / "disk.qcow2", "qcow2"))
        assert task["status"] == "success", task
        assert (image["status"], image["disk_format"]) == ("active", "qcow2")
        _assert_describes(image, (disks / "disk.qcow2").read_bytes())
        assert image["virtual_size"] == VIRTUAL_SIZE


def test_an_operator_may_keep_images_as_qcow2(tmp_path_factory, disks, tmp_path):
    runner = _cloud(
        tmp_path_factory.mktemp("image-conversion-qcow2"),
        image_conversion=ImageConversionConfig(output_format="qcow2"),
    )
    try:
        with _glance(runner) as glance:
            vmdk_id = _import(glance, disks / "sparse.vmdk", "vmdk")
            qcow2_id = _import(glance, disks / "disk.qcow2", "qcow2")
            image, task = _finished(glance, vmdk_id)
            assert task["status"] == "success", task
            assert (image["disk_format"], image["virtual_size"]) == ("qcow2", VIRTUAL_SIZE)
            data = _download(glance, vmdk_id, tmp_path / "stored.qcow2")
            _assert_describes(image, data)
            assert _same_disk(disks / "sparse.vmdk", "vmdk", tmp_path / "stored.qcow2", "qcow2")
            # Already qcow2: stored as it came.
            image, task = _finished(glance, qcow2_id)
            assert (task["status"], image["disk_format"]) == ("success", "qcow2")
            _assert_describes(image, (disks / "disk.qcow2").read_bytes())
    finally:
        runner.stop()

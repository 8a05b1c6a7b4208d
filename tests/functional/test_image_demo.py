"""`cumulo up --with-demo-image`: a new user starts the cloud and finds a bootable image."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail


@pytest.fixture(scope="module")
def guest():
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is needed for the demo image's root disk")
    from cumulo.testing.guest import build_guest

    try:
        return build_guest()
    except Exception as exc:  # noqa: BLE001 - no Debian packages to be had here
        skip_or_fail(f"the tiny test guest could not be built: {exc}")


def _up_with_demo_image(state_dir: Path) -> subprocess.Popen:
    """`cumulo up --with-demo-image` as a user runs it; returns once the APIs answer."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir), "--with-demo-image"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = CloudRunner(state_dir).config.ports.image
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cumulo up exited:\n{proc.stderr.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/versions", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("cumulo up --with-demo-image did not start")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_up_with_demo_image_registers_the_tiny_guest_once(guest, tmp_path: Path):
    state_dir = tmp_path / "state"
    configure_state_dir(state_dir)
    runner = CloudRunner(state_dir)

    proc = _up_with_demo_image(state_dir)
    try:
        # The demo user sees the public images and can boot `tiny` with its kernel.
        images = runner.openstack("image", "list", "--long", "-f", "json", cloud="cumulo-demo")
        by_name = {i["Name"]: i for i in images}
        assert set(by_name) >= {"tiny", "tiny-kernel", "tiny-ramdisk"}
        formats = {"tiny": "qcow2", "tiny-kernel": "aki", "tiny-ramdisk": "ari"}
        for name, disk_format in formats.items():
            assert by_name[name]["Status"] == "active"
            assert by_name[name]["Disk Format"] == disk_format
            assert by_name[name]["Visibility"] == "public"
        tiny = runner.openstack("image", "show", "tiny", "-f", "json", cloud="cumulo-demo")
        props = tiny["properties"]
        assert props["kernel_id"] == by_name["tiny-kernel"]["ID"]
        assert props["ramdisk_id"] == by_name["tiny-ramdisk"]["ID"]
        assert props["os_command_line"] == guest.command_line
        kernel = runner.openstack("image", "show", "tiny-kernel", "-f", "json")
        assert kernel["size"] == guest.kernel.stat().st_size
    finally:
        err = _stop(proc)
    assert "demo image: tiny" in err, err

    # A restart with the flag keeps the same images: no duplicates.
    proc = _up_with_demo_image(state_dir)
    try:
        again = runner.openstack("image", "list", "-f", "json")
    finally:
        _stop(proc)
    names = [i["Name"] for i in again if i["Name"].startswith("tiny")]
    assert sorted(names) == ["tiny", "tiny-kernel", "tiny-ramdisk"]
    assert {i["ID"] for i in again} == {i["ID"] for i in images}

"""Ansible's openstack.cloud collection (as the `ansible` package ships it) builds a small
project on cumulo and removes it: its common modules (object containers too) work
unchanged, and `floating_ip` finds the address in the server's addresses instead of timing out."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.cloudrunner import VENV_BIN, CloudRunner
from tests.conftest import skip_or_fail

PLAYBOOK = Path(__file__).parent / "playbooks" / "small_project.yml"
# The openstack.cloud collection the ansible package bundles (2.5) reads
# openstack.version, which openstacksdk 4.15 removed: its modules run on an
# interpreter with an openstacksdk from before that (the controller is this venv).
MODULE_SDK = "openstacksdk>=4,<4.15"
MODULE_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cumulo" / "ansible-sdk"
)


def _module_python() -> Path:
    python = MODULE_VENV / "bin" / "python"
    check = [str(python), "-c", "import openstack.version"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(MODULE_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", MODULE_SDK],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            skip_or_fail(f"cannot install {MODULE_SDK} for Ansible's modules: {done.stderr[-500:]}")
    return python


def test_openstack_cloud_collection_builds_and_removes_a_project(cloud: CloudRunner, tmp_path):
    playbook = VENV_BIN / "ansible-playbook"
    if not playbook.exists():
        skip_or_fail("ansible is not installed (the `test` extra has it)")
    image_file = tmp_path / "image.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(image_file), "32M"],
        check=True,
        capture_output=True,
    )
    prefix = f"ans-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in cloud.env("cumulo-demo").items() if not k.startswith("ANSIBLE_")},
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": str(_module_python()),
    }
    run = subprocess.run(
        [
            str(playbook),
            "-i",
            "localhost,",
            "-e",
            f"prefix={prefix}",
            "-e",
            f"image_file={image_file}",
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "failed=0" in run.stdout
    # Everything the playbook made is gone again.
    for kind in ("server", "network", "security group", "volume", "image", "container"):
        listed = cloud.openstack(*kind.split(), "list", "-f", "json", cloud="cumulo-demo")
        assert not [r for r in listed if str(r.get("Name", "")).startswith(prefix)], kind

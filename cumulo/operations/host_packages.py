"""The host packages cumulo needs (host_packages.txt), which are missing, and installing them.

`make run` calls `cumulo host-packages --install`: as root it installs what is missing with
apt-get, saying what and why; otherwise it prints the one command to run. .ci/run reads the
same list, so CI installs exactly what a user's machine gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class HostPackage:
    name: str
    needed_for: str  # "run" or "test"
    why: str


def host_packages(include_test: bool = False) -> list[HostPackage]:
    text = resources.files("cumulo.operations").joinpath("host_packages.txt").read_text()
    packages = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, needed_for, why = line.split(maxsplit=2)
        if needed_for == "run" or include_test:
            packages.append(HostPackage(name, needed_for, why))
    return packages


def package_manager() -> str | None:
    """apt-get on Debian/Ubuntu; None where cumulo does not know the package names."""
    return "apt-get" if shutil.which("apt-get") and shutil.which("dpkg-query") else None


def missing_packages(
    packages: list[HostPackage], admin_dir: Path | None = None
) -> list[HostPackage]:
    """The packages dpkg does not show as installed (`admin_dir`: another dpkg database)."""
    argv = ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"]
    if admin_dir is not None:
        argv.insert(1, f"--admindir={admin_dir}")
    out = subprocess.run(
        [*argv, *(p.name for p in packages)], capture_output=True, text=True
    ).stdout
    installed = {
        words[0].split(":")[0]
        for words in (line.split() for line in out.splitlines())
        if len(words) == 2 and words[1] == "installed"
    }
    return [p for p in packages if p.name not in installed]


def install_command(packages: list[HostPackage]) -> list[str]:
    return ["apt-get", "install", "-y", "-q", *(p.name for p in packages)]


def install(packages: list[HostPackage]) -> None:
    """apt-get update + install, non-interactive (raises CalledProcessError on failure)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(install_command(packages), check=True, env=env)

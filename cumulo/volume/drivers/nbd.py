"""NBD exports of volumes for other hosts: one qemu-storage-daemon per attachment.

The daemon serves the volume file at nbd://<address>:<port>/<export name>, bound
to the storage network address; stopping it (on detach) removes the export.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.volume.drivers.driver import DriverError

_START_TIMEOUT = 10.0


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class _Export:
    proc: asyncio.subprocess.Process
    info: dict[str, Any]
    path: Path
    fmt: str
    readonly: bool


class NbdExports:
    def __init__(self, run_dir: Path, address: str) -> None:
        self.run_dir = run_dir
        self.address = address
        self._exports: dict[str, _Export] = {}
        self._lock = asyncio.Lock()

    async def start(
        self, name: str, path: Path, fmt: str, readonly: bool, port: int | None = None
    ) -> dict[str, Any]:
        async with self._lock:
            if name in self._exports:
                return self._exports[name].info
            port = port or _free_port(self.address)
            writable = "off" if readonly else "on"
            proc = await asyncio.create_subprocess_exec(
                "qemu-storage-daemon",
                "--blockdev", f"driver=file,filename={path},node-name=file0",
                "--blockdev", f"driver={fmt},file=file0,node-name=disk0",
                "--nbd-server", f"addr.type=inet,addr.host={self.address},addr.port={port}",
                "--export", f"type=nbd,id=exp0,node-name=disk0,name={name},writable={writable}",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            if not await self._listening(proc, port):
                err = b""
                if proc.returncode is None:
                    proc.kill()
                if proc.stderr is not None:
                    err = await proc.stderr.read()
                await proc.wait()
                raise DriverError(f"qemu-storage-daemon did not start: {err.decode().strip()}")
            info = {
                "host": self.address,
                "port": port,
                "export": name,
                "uri": f"nbd://{self.address}:{port}/{name}",
            }
            self._exports[name] = _Export(proc, info, path, fmt, readonly)
            return info

    def exporting(self, path: Path) -> list[str]:
        """The exports serving this file."""
        return [name for name, e in self._exports.items() if e.path == path]

    def renamed(self, old: Path, new: Path) -> None:
        """The file of some exports was renamed (the daemons keep it open)."""
        for export in self._exports.values():
            if export.path == old:
                export.path = new

    async def regrow(self, name: str, grow) -> None:
        """Grow an exported volume: `await grow()` (qemu-img resize) while the export is
        stopped, then the same export again on the same port. qemu-storage-daemon 7.2's
        NBD server refuses to resize a disk it serves, and a reader connected to it would
        lose its connection: refused while one is."""
        export = self._exports[name]
        port = export.info["port"]
        if await asyncio.to_thread(_has_clients, port):
            raise DriverError(
                f"volume export {name} has a reader connected (a running guest): an exported "
                "disk cannot be grown under it (qemu-storage-daemon 7.2)"
            )
        await self.stop(name)
        try:
            await grow()
        finally:
            await self.start(name, export.path, export.fmt, export.readonly, port=port)

    async def _listening(self, proc: asyncio.subprocess.Process, port: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while loop.time() < deadline and proc.returncode is None:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.address, port)
                writer.close()
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self, name: str) -> None:
        async with self._lock:
            export = self._exports.pop(name, None)
        if export is None:
            return
        if export.proc.returncode is None:
            export.proc.terminate()
        try:
            await asyncio.wait_for(export.proc.wait(), 10)
        except TimeoutError:
            export.proc.kill()
            await export.proc.wait()

    def active(self) -> list[str]:
        return list(self._exports)

    async def close(self) -> None:
        for name in list(self._exports):
            await self.stop(name)


def _has_clients(port: int) -> bool:
    """Whether a TCP connection to this local port is established (/proc/net/tcp{,6})."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False

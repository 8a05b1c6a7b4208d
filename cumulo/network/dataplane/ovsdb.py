"""Open vSwitch's daemons and database, for the openvswitch data plane.

`OvsDaemons` starts ovsdb-server and ovs-vswitchd for one deployment when they are not
running: their database, sockets, pid files and logs live in its own run dir (under
the state dir), and ovs-vswitchd runs inside the deployment's host namespace, so the
bridges' internal ports and every port it opens are in there, as linuxbridge's
bridges are (ovsdb-server too: removing the namespace stops both). Parallel clouds on
one machine each have their own switch.

`Ovsdb` reads and writes the Open_vSwitch database through the `ovs` library's IDL
(what Neutron's agent uses): a replica of the tables kept in sync over the socket,
changed with transactions. The IDL is synchronous; every call runs in a thread,
one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import ovs.db.idl
import ovs.poller

from cumulo.network.dataplane import commands as cmd

LOG = logging.getLogger(__name__)

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
# The columns read or written (not the interfaces' statistics, which ovs-vswitchd
# rewrites every few seconds: every replica would parse them).
COLUMNS = {
    "Open_vSwitch": ["bridges", "other_config", "datapath_types", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "protocols", "fail_mode"],
    "Port": ["name", "interfaces", "tag"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error"],
}
KERNEL_MODULE = Path("/sys/module/openvswitch")
# Seconds a new port row waits for ovs-vswitchd to apply the changes before it (see
# _wait_caught_up); the userspace datapath on a loaded host has taken over 10 s.
CATCH_UP_WAIT = 60.0


def kernel_datapath() -> bool:
    """Whether the host has the OVS kernel module (else the userspace datapath)."""
    return KERNEL_MODULE.exists()


def datapath_type() -> str:
    """`system` (the kernel module) or `netdev` (the userspace datapath, ovs-vswitchd
    moves every packet itself: slower, but needs no module)."""
    return "system" if kernel_datapath() else "netdev"


class OvsDaemons:
    """ovsdb-server and ovs-vswitchd of one deployment (its run dir and namespace)."""

    def __init__(self, run_dir: Path, namespace: str) -> None:
        self.run_dir = run_dir
        self.namespace = namespace
        self.db_file = run_dir / "conf.db"
        self.socket = run_dir / "db.sock"

    @property
    def env(self) -> dict[str, str]:
        # Where ovs-vswitchd puts each bridge's OpenFlow socket (<bridge>.mgmt), and
        # where ovs-ofctl and ovs-appctl look for them.
        return {**os.environ, "OVS_RUNDIR": str(self.run_dir)}

    @property
    def remote(self) -> str:
        return f"unix:{self.socket}"

    def _pid(self, name: str) -> int | None:
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return self._pid("ovsdb-server") is not None and self._pid("ovs-vswitchd") is not None

    async def ensure(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        common = ("--detach", "--no-chdir", "--monitor")
        if self._pid("ovsdb-server") is None:
            if not self.db_file.exists():
                await cmd.run("ovsdb-tool", "create", str(self.db_file), str(SCHEMA))
            # In the namespace too (its socket is a file: reachable from anywhere), so
            # that removing the namespace stops it, as the orphan cleanup does.
            await cmd.run_daemon(
                *cmd.netns_exec(self.namespace, "env", f"OVS_RUNDIR={self.run_dir}"),
                "ovsdb-server", str(self.db_file),
                f"--remote=punix:{self.socket}", f"--pidfile={self.run_dir}/ovsdb-server.pid",
                f"--unixctl={self.run_dir}/ovsdb-server.ctl",
                f"--log-file={self.run_dir}/ovsdb-server.log", *common,
            )  # fmt: skip
        if self._pid("ovs-vswitchd") is None:
            await cmd.run_daemon(
                *cmd.netns_exec(self.namespace, "env", f"OVS_RUNDIR={self.run_dir}",
                                "ovs-vswitchd", self.remote,
                                f"--pidfile={self.run_dir}/ovs-vswitchd.pid",
                                f"--unixctl={self.run_dir}/ovs-vswitchd.ctl",
                                f"--log-file={self.run_dir}/ovs-vswitchd.log", *common),
            )  # fmt: skip

    def pids(self) -> tuple[int | None, int | None]:
        return self._pid("ovsdb-server"), self._pid("ovs-vswitchd")

    async def restart_switch(self) -> None:
        """ovs-vswitchd again (it reads some settings only when it starts)."""
        await self._stop("ovs-vswitchd")
        await self.ensure()

    async def stop(self) -> None:
        """Stop both daemons."""
        for name in ("ovs-vswitchd", "ovsdb-server"):
            await self._stop(name)

    async def _stop(self, name: str) -> None:
        """Stop a daemon (its --monitor parent first, so nothing restarts it)."""
        pid = self._pid(name)
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError):
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid > 1:
                os.kill(ppid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if self._pid(name) is None:
                return
            await asyncio.sleep(0.1)

    async def ofctl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """ovs-ofctl against this deployment's switch (OpenFlow 1.3 with Nicira extensions)."""
        return await cmd.run(
            "ovs-ofctl", "-O", "OpenFlow13", *args, stdin=stdin, check=check, env=self.env
        )


class OvsdbError(RuntimeError):
    pass


class Ovsdb:
    """The Open_vSwitch database through the IDL (a synchronous replica; see module doc)."""

    def __init__(self, remote: str, timeout: float = 10.0) -> None:
        helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        self.idl = ovs.db.idl.Idl(remote, helper)
        # Ports by name (the IDL keeps the index as rows come and go): a lookup is not a
        # scan of every row, each decoded on access.
        self.idl.index_create("Port", "name").add_column("name")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._wait(lambda: self.idl.has_ever_connected())

    def _wait(self, done: Any) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self.idl.run()
            if done():
                return
            if time.monotonic() > deadline:
                raise OvsdbError(f"OVSDB at {self.idl._session.remotes[0]} did not answer")
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(100)
            poller.block()

    def _wait_applied(self, cfg: int) -> None:
        """Until ovs-vswitchd has applied configuration `cfg` (a switch that is down or
        slow past the timeout is not waited for: the agent's watch catches up). Called
        without the lock, taken only to read the replica: other threads' changes go on
        meanwhile, and ovs-vswitchd applies several in one reconfiguration."""
        deadline = time.monotonic() + self.timeout
        while True:
            with self._lock:
                self.idl.run()
                root = next(iter(self.rows("Open_vSwitch")), None)
                if root is None or root.cur_cfg >= cfg:
                    return
                poller = ovs.poller.Poller()
                self.idl.wait(poller)
            if time.monotonic() > deadline:
                LOG.warning("ovs-vswitchd has not applied OVSDB configuration %d yet", cfg)
                return
            poller.timer_wait(100)
            poller.block()

    def _wait_caught_up(self) -> None:
        """Until ovs-vswitchd has applied every change committed so far. It knows ports
        by name: a row added while it has not yet seen the deletion of the port of that
        name is the same port to it, which keeps the deleted device open, and the device
        made again under the name passes nothing (a router's legs rebuilt by a
        restarted agent, when the deletion's wait gave up on a loaded host)."""
        deadline = time.monotonic() + CATCH_UP_WAIT
        while True:
            with self._lock:
                self.idl.run()
                root = next(iter(self.rows("Open_vSwitch")), None)
                if root is None or root.cur_cfg >= root.next_cfg:
                    return
                wanted = root.next_cfg
                poller = ovs.poller.Poller()
                self.idl.wait(poller)
            if time.monotonic() > deadline:
                raise OvsdbError(
                    f"ovs-vswitchd has not applied OVSDB configuration {wanted} after "
                    f"{CATCH_UP_WAIT:.0f} s: no port is added before it has"
                )
            poller.timer_wait(100)
            poller.block()

    def close(self) -> None:
        self.idl.close()

    # -- reading -----------------------------------------------------------------------

    def refresh(self) -> None:
        with self._lock:
            self.idl.run()

    def seqno(self) -> int:
        """Changes when the replica does (cheap: nothing is read)."""
        with self._lock:
            self.idl.run()
            return self.idl.change_seqno

    def rows(self, table: str) -> list[Any]:
        return list(self.idl.tables[table].rows.values())

    def bridge(self, name: str) -> Any | None:
        return next((b for b in self.rows("Bridge") if b.name == name), None)

    def ports(self, bridge: str) -> dict[str, dict[str, Any]]:
        """The bridge's ports by name: ofport, tag, type and external_ids of each."""
        with self._lock:
            self.idl.run()
            br = self.bridge(bridge)
            found: dict[str, dict[str, Any]] = {}
            for port in br.ports if br is not None else []:
                iface = port.interfaces[0] if port.interfaces else None
                ofport = (iface.ofport or [-1])[0] if iface is not None else -1
                found[port.name] = {
                    "ofport": ofport,
                    "tag": (port.tag or [None])[0],
                    "type": iface.type if iface is not None else "",
                    "external_ids": dict(iface.external_ids) if iface is not None else {},
                    "error": (iface.error or [None])[0] if iface is not None else None,
                }
            return found

    def bridge_names(self) -> list[str]:
        with self._lock:
            self.idl.run()
            return sorted(b.name for b in self.rows("Bridge"))

    def datapath_types(self) -> list[str]:
        with self._lock:
            self.idl.run()
            root = next(iter(self.rows("Open_vSwitch")), None)
            return list(root.datapath_types) if root is not None else []

    # -- writing -----------------------------------------------------------------------

    def _commit(self, change: Any) -> None:
        """Run `change(txn)` in a transaction, retried when the replica was stale; then
        wait until ovs-vswitchd has applied it."""
        applied = self._transact(change)
        if applied is not None:
            self._wait_applied(applied)

    def _transact(self, change: Any) -> int | None:
        """The transaction; the configuration number ovs-vswitchd will have applied it
        at (None: nothing to wait for)."""
        with self._lock:
            for _ in range(5):
                self._wait(lambda: self.idl.has_ever_connected())
                txn = ovs.db.idl.Transaction(self.idl)
                # (not a root row this transaction inserts: it has no cur_cfg yet)
                root = next(iter(self.rows("Open_vSwitch")), None)
                change(txn)
                # As `ovs-vsctl --wait`: next_cfg counts the change, and ovs-vswitchd
                # sets cur_cfg to it once it has applied it (ports opened, OpenFlow port
                # numbers given), so what follows reads the switch as configured. (Not
                # only once cur_cfg is above 0: nothing else counts, it stayed 0, and
                # no change ever waited.)
                applying = root is not None
                if applying:
                    root.increment("next_cfg")
                status = txn.commit_block()
                if status in (txn.SUCCESS, txn.UNCHANGED):
                    # Until the replica shows what was written (reads follow writes).
                    self._wait(lambda: self.idl.change_seqno != 0)
                    if applying and status == txn.SUCCESS:
                        return txn.get_increment_new_value()
                    return None
                if status != txn.TRY_AGAIN:
                    raise OvsdbError(f"OVSDB transaction failed: {status} {txn.get_error()}")
            raise OvsdbError("OVSDB transaction kept conflicting")

    def set_other_config(self, values: dict[str, str]) -> None:
        def change(txn: Any) -> None:
            root = next(iter(self.rows("Open_vSwitch")), None)
            if root is None:
                root = txn.insert(self.idl.tables["Open_vSwitch"])
                root.other_config = values
                return
            root.other_config = {**dict(root.other_config), **values}

        self._commit(change)

    def ensure_bridge(self, name: str, datapath: str, protocols: list[str]) -> None:
        def change(txn: Any) -> None:
            root = next(iter(self.rows("Open_vSwitch")), None)
            bridges: list[Any] = []
            if root is None:  # a new database: the root row too (no columns to read yet)
                root = txn.insert(self.idl.tables["Open_vSwitch"])
            else:
                root.verify("bridges")
                bridges = list(root.bridges)
            br = self.bridge(name)
            if br is None:
                iface = txn.insert(self.idl.tables["Interface"])
                iface.name, iface.type = name, "internal"
                port = txn.insert(self.idl.tables["Port"])
                port.name, port.interfaces = name, [iface]
                br = txn.insert(self.idl.tables["Bridge"])
                br.name, br.ports = name, [port]
                root.bridges = [*bridges, br]
                br.datapath_type, br.protocols = datapath, protocols
                br.fail_mode = "secure"  # no NORMAL flow of its own: ours only
                return
            if br.datapath_type != datapath:
                br.datapath_type = datapath
            if list(br.protocols) != protocols:
                br.protocols = protocols
            if list(br.fail_mode) != ["secure"]:
                br.fail_mode = "secure"

        self._commit(change)

    def ensure_port(
        self,
        bridge: str,
        name: str,
        tag: int | None = None,
        type: str = "",  # noqa: A002 - the column's name
        options: dict[str, str] | None = None,
        external_ids: dict[str, str] | None = None,
    ) -> None:
        """The port `name` on `bridge` as given (moved from another bridge if it was on one)."""
        spec = {"tag": tag, "type": type, "options": options, "external_ids": external_ids}
        self.ensure_ports(bridge, {name: spec})

    def ensure_ports(self, bridge: str, ports: dict[str, dict[str, Any]]) -> None:
        """Several ports as ensure_port makes each (keyword arguments by name), in one
        transaction."""

        def change(txn: Any) -> None:
            br = self.bridge(bridge)
            if br is None:
                raise OvsdbError(f"no bridge {bridge}")
            on_bridge: set[Any] | None = None  # read only when a port already exists
            for name, spec in ports.items():
                port = self._port_named(name)
                if port is not None:
                    if on_bridge is None:
                        on_bridge = {p.uuid for p in br.ports}
                    if port.uuid not in on_bridge:  # on another bridge: moved here
                        for other in self.rows("Bridge"):
                            if port in other.ports:
                                other.delvalue("ports", port)
                        port = None
                new = self._ensure_port(txn, port, name, **spec)
                if new is not None:
                    # A mutation (as ovs-vsctl add-port), not the whole list rewritten:
                    # concurrent adds to one bridge do not conflict.
                    br.addvalue("ports", new)

        if not ports:
            return
        with self._lock:
            self.idl.run()
            adding = any(self._port_named(name) is None for name in ports)
        if adding:
            self._wait_caught_up()
        self._commit(change)

    def _port_named(self, name: str) -> Any | None:
        rows = self.idl.tables["Port"].rows
        return next(self.idl.index_equal("Port", "name", rows.IndexEntry(name=name)), None)

    def _ensure_port(
        self,
        txn: Any,
        port: Any | None,
        name: str,
        tag: int | None = None,
        type: str = "",  # noqa: A002 - the column's name
        options: dict[str, str] | None = None,
        external_ids: dict[str, str] | None = None,
    ) -> Any | None:
        """`port` (None: a new one) as given; a new Port row the caller adds to the
        bridge, else None."""
        if port is None:
            iface = txn.insert(self.idl.tables["Interface"])
            iface.name = name
            port = txn.insert(self.idl.tables["Port"])
            port.name, port.interfaces = name, [iface]
            iface.type, iface.options = type, options or {}
            iface.external_ids = external_ids or {}
            port.tag = [tag] if tag is not None else []
            return port
        iface = port.interfaces[0]
        if iface.type != type:
            iface.type = type
        if dict(iface.options) != (options or {}):
            iface.options = options or {}
        if external_ids is not None and dict(iface.external_ids) != external_ids:
            iface.external_ids = external_ids
        wanted_tag = [tag] if tag is not None else []
        if list(port.tag) != wanted_tag:
            port.tag = wanted_tag
        return None

    def delete_port(self, bridge: str, name: str) -> None:
        self.delete_ports(bridge, [name])

    def delete_ports(self, bridge: str, names: list[str]) -> None:
        def change(txn: Any) -> None:
            br = self.bridge(bridge)
            if br is not None:
                for name in names:  # (a mutation: removing what is not there is a no-op)
                    if (port := self._port_named(name)) is not None:
                        br.delvalue("ports", port)

        if names:
            self._commit(change)

    def delete_bridge(self, name: str) -> None:
        def change(txn: Any) -> None:
            root = next(iter(self.rows("Open_vSwitch")), None)
            if root is not None:
                root.verify("bridges")
                root.bridges = [b for b in root.bridges if b.name != name]

        self._commit(change)

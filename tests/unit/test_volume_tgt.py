"""The iSCSI target helper's pieces: what goes over tgtd's management socket (tgtadm's
wire format, answered here by a socket that decodes it as tgtd does), the per-volume
CHAP credentials, and the connector's initiator name."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from cumulo.volume.drivers.driver import DriverError, InvalidConnector
from cumulo.volume.drivers.tgt import (
    MODE_ACCOUNT,
    MODE_DEVICE,
    MODE_TARGET,
    OP_BIND,
    OP_DELETE,
    OP_NEW,
    OP_SHOW,
    IscsiExports,
    TgtAdmin,
    TgtError,
    TgtTimeout,
    chap_credentials,
    check_initiator,
)

# usr/tgtadm.h, written out independently of the module under test.
REQUEST = struct.Struct("=ii64sIiQQIIIIII")


class FakeTgtd:
    """A unix socket that reads one tgtadm request per connection as tgtd's mgmt.c does
    and answers with the scripted (error, text) of the next reply."""

    def __init__(self, path: Path, replies: list[tuple[int, str]]) -> None:
        self.requests: list[dict] = []
        self.replies = replies
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        replies = iter(self.replies)
        while True:
            conn, _ = self.server.accept()
            with conn:
                header = conn.recv(REQUEST.size, socket.MSG_WAITALL)
                if not header:
                    continue  # a probe: is tgtd running?
                error, text = next(replies, (1, ""))
                fields = REQUEST.unpack(header)
                length = fields[3]
                body = conn.recv(length - REQUEST.size, socket.MSG_WAITALL) if length > 120 else b""
                self.requests.append(
                    {
                        "mode": fields[0],
                        "op": fields[1],
                        "lld": fields[2].rstrip(b"\0").decode(),
                        "tid": fields[4],
                        "lun": fields[6],
                        "force": fields[12],
                        "body": body,
                    }
                )
                data = text.encode() + b"\0" if text else b""
                conn.sendall(struct.pack("=II", error, 8 + len(data) if not error else 8) + data)
            if len(self.requests) == len(self.replies):
                return


async def test_the_request_is_tgtadms_header_and_nul_terminated_parameters(
    tmp_path: Path,
) -> None:
    assert REQUEST.size == 120  # what tgtd reads before the parameters
    tgtd = FakeTgtd(tmp_path / "socket.0", [(0, ""), (0, "Target 3: iqn.x:volume-a\n    x\n")])
    admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
    await admin.request(MODE_ACCOUNT, OP_NEW, {"user": "u1", "password": "p1"})
    shown = await admin.request(MODE_TARGET, OP_SHOW)
    tgtd.thread.join(5)
    first, second = tgtd.requests
    assert first == {
        "mode": 7, "op": 0, "lld": "iscsi", "tid": -1, "lun": 2**64 - 1, "force": 0,
        "body": b"user=u1,password=p1\0",
    }  # fmt: skip
    assert (second["mode"], second["op"], second["body"]) == (1, 2, b"")
    assert shown.startswith("Target 3: iqn.x:volume-a")


async def test_a_refusal_names_tgtds_error_and_a_comma_never_reaches_it(tmp_path: Path) -> None:
    tgtd = FakeTgtd(tmp_path / "socket.0", [(9, "")])
    admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
    with pytest.raises(TgtError, match="target already exists") as refused:
        await admin.request(MODE_TARGET, OP_NEW, {"targetname": "iqn.x"}, tid=1, what="create x")
    assert refused.value.code == 9
    with pytest.raises(DriverError, match="comma"):
        await admin.request(MODE_TARGET, OP_NEW, {"targetname": "a,b"}, tid=1)
    assert len(tgtd.requests) == 1


def test_chap_credentials_are_stable_per_volume_and_differ_between_volumes() -> None:
    key = b"k" * 32
    user, password = chap_credentials(key, "vol-1")
    assert (user, password) == chap_credentials(key, "vol-1")
    assert len(user) == len(password) == 20 and user.isalnum() and password.isalnum()
    assert user != password
    assert chap_credentials(key, "vol-2")[1] != password
    assert chap_credentials(b"o" * 32, "vol-1")[1] != password


def test_an_iscsi_connection_needs_the_connectors_initiator_name() -> None:
    assert check_initiator({"initiator": "iqn.1993-08.org.debian:01:abc"}) == (
        "iqn.1993-08.org.debian:01:abc"
    )
    with pytest.raises(InvalidConnector, match="required information: initiator"):
        check_initiator({"host": "h"})
    with pytest.raises(InvalidConnector, match="not an iSCSI name"):
        check_initiator({"initiator": "iqn.x,y"})


async def test_a_new_export_takes_the_next_free_tid_when_another_took_its_own(
    tmp_path: Path,
) -> None:
    """Two backends (or two clouds) on one tgtd may pick the same tid at once: the one
    refused ("target already exists") takes the next; then LUN 1, the CHAP account and
    its binding, and the initiator's ACL, in that order."""
    iqn = "iqn.2010-10.org.openstack:volume-v1"
    tgtd = FakeTgtd(
        tmp_path / "socket.0",
        [
            (0, ""),  # show: no target yet
            (0, "Target 1: iqn.other:a\n"),  # show before making it
            (9, ""),  # new tid 2: another took it meanwhile
            (0, "Target 1: iqn.other:a\nTarget 2: iqn.other:b\n"),  # show again
            (0, "Target 1: iqn.other:a\nTarget 2: iqn.other:b\n"),  # (not ours)
            (0, ""),  # new tid 3
            (0, ""),  # new logical unit
            (0, ""),  # new account
            (0, ""),  # bind account
            (0, ""),  # bind initiator
        ],
    )
    admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
    exports = IscsiExports(tmp_path / "run", "127.0.0.1", admin=admin)
    data = await exports.connect("v1", tmp_path / "volume-v1", "att-1", "iqn.x:host")
    tgtd.thread.join(5)
    made = [(r["mode"], r["op"], r["tid"], r["lun"], r["body"]) for r in tgtd.requests]
    user, password = chap_credentials((tmp_path / "run" / "chap.key").read_bytes(), "v1")
    assert made[2][:3] == (1, 0, 2) and made[5][:3] == (1, 0, 3)
    assert made[5][4] == f"targetname={iqn}\0".encode()
    assert made[6] == (2, 0, 3, 1, f"path={tmp_path / 'volume-v1'},bstype=rdwr\0".encode())
    assert made[7][:2] == (7, 0) and made[7][4] == f"user={user},password={password}\0".encode()
    assert made[8][:3] == (7, 3, 3) and made[9][:3] == (1, 3, 3)
    assert made[9][4] == b"initiator-name=iqn.x:host\0"
    assert (data["target_iqn"], data["auth_password"]) == (iqn, password)
    assert ((tmp_path / "run" / "chap.key").stat().st_mode & 0o777) == 0o600
    assert password not in (tmp_path / "run" / "volume-v1.json").read_text()


class StallingTgtd:
    """A tgtd that keeps targets, accounts and ACLs as tgtd does, and holds unanswered
    (as a tgtd whose event loop is stuck) every request for a tid in `stalled` until
    `release` is set; `show target` always answers, with an I_T nexus per session in
    `sessions`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.targets: dict[int, str] = {}
        self.sessions: dict[int, int] = {}
        self.stalled: set[int] = set()
        self.release = asyncio.Event()
        self.busy_answers = 0  # "logical unit is busy" to that many target deletes
        self.held = 0
        self.served: list[tuple[int, int, int]] = []

    async def __aenter__(self) -> StallingTgtd:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        self.server.close()

    def show(self) -> str:
        lines = []
        for tid, iqn in sorted(self.targets.items()):
            lines += [f"Target {tid}: {iqn}", "    I_T nexus information:"]
            lines += [
                f"        I_T nexus: {tid * 10 + n}" for n in range(self.sessions.get(tid, 0))
            ]
        return "\n".join(lines) + "\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await reader.readexactly(REQUEST.size)
        except asyncio.IncompleteReadError:
            writer.close()  # a probe: is tgtd running?
            return
        fields = REQUEST.unpack(header)
        body = await reader.readexactly(fields[3] - REQUEST.size) if fields[3] > 120 else b""
        mode, op, tid = fields[0], fields[1], fields[4]
        params = dict(p.split("=", 1) for p in body.rstrip(b"\0").decode().split(",") if p)
        if tid in self.stalled and (mode, op) != (MODE_TARGET, OP_SHOW):
            self.held += 1
            await self.release.wait()
        error, text = self._answer(mode, op, tid, params)
        self.served.append((mode, op, tid))
        data = text.encode() + b"\0" if text else b""
        writer.write(struct.pack("=II", error, 8 + len(data)) + data)
        await writer.drain()
        writer.close()

    def _answer(self, mode: int, op: int, tid: int, params: dict[str, str]) -> tuple[int, str]:
        if (mode, op) == (MODE_TARGET, OP_SHOW):
            return 0, self.show()
        if (mode, op) == (MODE_TARGET, OP_NEW):
            if tid in self.targets:
                return 9, ""
            self.targets[tid] = params["targetname"]
        elif (mode, op) == (MODE_TARGET, OP_DELETE):
            if tid not in self.targets:
                return 4, ""
            if self.busy_answers:
                self.busy_answers -= 1
                return 20, ""
            del self.targets[tid]
        elif mode in (MODE_TARGET, MODE_DEVICE) and tid not in self.targets:
            return 4, ""
        return 0, ""


async def test_a_stalled_tgtd_request_fails_in_time_logged_with_tgtds_session_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tgtd that takes a request and does not answer it fails that step after the
    exchange timeout (not after the caller's 120 s), and the log names the request,
    how long it waited and how many sessions tgtd held then."""
    async with StallingTgtd(tmp_path / "socket.0") as tgtd:
        tgtd.targets = {1: "iqn.x:volume-a", 2: "iqn.x:volume-b"}
        tgtd.sessions = {1: 2, 2: 1}
        tgtd.stalled = {1}
        admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TgtTimeout, match="did not answer the request to delete a target"):
            await admin.request(MODE_TARGET, OP_DELETE, tid=1, force=True, what="delete a target")
        assert time.monotonic() - started < 5
        assert tgtd.held == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "cumulo.volume.drivers.tgt"]
    assert any(
        re.fullmatch(
            r"tgtd did not answer the request to delete a target in 0\.[5-9] s "
            r"\(3 sessions open on 2 targets\)",
            m,
        )
        for m in logged
    ), logged


async def test_a_slow_answer_is_logged_with_its_duration_and_tgtds_sessions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with StallingTgtd(tmp_path / "socket.0") as tgtd:
        tgtd.targets, tgtd.sessions, tgtd.stalled = {1: "iqn.x:volume-a"}, {1: 1}, {1}
        admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0", timeout=5, slow=0.2)
        asyncio.get_running_loop().call_later(0.4, tgtd.release.set)
        await admin.request(MODE_ACCOUNT, OP_BIND, {"user": "u"}, tid=1, what="bind an account")
    slow = [r for r in caplog.records if "bind an account" in r.getMessage()]
    assert slow and slow[0].levelname == "WARNING"
    assert re.search(r"tgtd took 0\.\d s to bind an account \(1 sessions open on 1 targets\)",
                     slow[0].getMessage())  # fmt: skip


async def test_one_volumes_stuck_export_does_not_hold_another_volumes_attach(
    tmp_path: Path,
) -> None:
    """Issue #11: a detach whose tgtd request hangs held the backend's one lock, so
    every other volume's attach and detach waited behind it until the caller's 120 s
    ran out (503). Exports are serialized per volume: another volume attaches and
    detaches meanwhile, and the stuck one fails after the exchange timeout."""
    async with StallingTgtd(tmp_path / "socket.0") as tgtd:
        admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0", timeout=3)
        exports = IscsiExports(tmp_path / "run", "127.0.0.1", admin=admin)
        await exports.connect("a", tmp_path / "volume-a", "att-a", "iqn.x:host-1")
        tgtd.stalled = {1}  # volume a's target
        stuck = asyncio.create_task(exports.disconnect("a", "att-a"))
        while not tgtd.held:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        data = await exports.connect("b", tmp_path / "volume-b", "att-b", "iqn.x:host-2")
        await exports.disconnect("b", "att-b")
        assert time.monotonic() - started < 1.5, "volume b waited for volume a's export"
        assert data["target_iqn"].endswith("volume-b") and not stuck.done()
        with pytest.raises(TgtTimeout):
            await stuck
        assert exports.exporting("a")  # left as it was: the detach can be tried again
        tgtd.stalled.clear()
        await exports.disconnect("a", "att-a")
        assert tgtd.targets == {} and not exports.exporting("a")


async def test_tgtd_is_spoken_to_without_the_default_thread_pool(tmp_path: Path) -> None:
    """Image and volume copies fill asyncio's default pool (6 threads on 2 cores): an
    export must not queue behind them."""
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(pool)
    copying = threading.Event()
    busy = loop.run_in_executor(None, copying.wait, 10)
    try:
        async with StallingTgtd(tmp_path / "socket.0"):
            admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0", timeout=2)
            exports = IscsiExports(tmp_path / "run", "127.0.0.1", admin=admin)
            async with asyncio.timeout(3):
                await exports.connect("a", tmp_path / "volume-a", "att-a", "iqn.x:host-1")
                await exports.disconnect("a", "att-a")
    finally:
        copying.set()
        await busy


async def test_a_target_is_deleted_once_tgtd_stops_saying_its_lun_is_busy(tmp_path: Path) -> None:
    """tgtd refuses to delete a target (even with --force) while commands of a
    logged-in host are in flight on its LUN: the delete is asked again."""
    async with StallingTgtd(tmp_path / "socket.0") as tgtd:
        admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
        exports = IscsiExports(tmp_path / "run", "127.0.0.1", admin=admin)
        await exports.connect("a", tmp_path / "volume-a", "att-a", "iqn.x:host-1")
        tgtd.busy_answers = 3
        await exports.remove("a")
        assert tgtd.targets == {} and tgtd.busy_answers == 0
        deletes = [s for s in tgtd.served if s[:2] == (MODE_TARGET, OP_DELETE)]
        assert len(deletes) == 4


async def test_a_target_a_timed_out_export_left_half_made_is_made_again_whole(
    tmp_path: Path,
) -> None:
    """tgtd may apply a create after the exporter gave up waiting for it: the next attach
    must not take that target (no LUN, no CHAP account) as the volume's export."""
    async with StallingTgtd(tmp_path / "socket.0") as tgtd:
        admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0", timeout=0.3)
        exports = IscsiExports(tmp_path / "run", "127.0.0.1", admin=admin)
        tgtd.stalled = {1}  # the create of tid 1 is held past the timeout
        with pytest.raises(TgtTimeout):
            await exports.connect("a", tmp_path / "volume-a", "att-a", "iqn.x:host-1")
        tgtd.stalled.clear()
        tgtd.release.set()  # ... and applied late: a bare target
        while 1 not in tgtd.targets:
            await asyncio.sleep(0.01)
        assert not exports.exporting("a")
        tgtd.served.clear()
        data = await exports.connect("a", tmp_path / "volume-a", "att-a", "iqn.x:host-1")
        made = [s for s in tgtd.served if s[:2] != (MODE_TARGET, OP_SHOW)]
        assert made[0] == (MODE_TARGET, OP_DELETE, 1)
        assert (MODE_TARGET, OP_NEW, 1) in made and (MODE_DEVICE, OP_NEW, 1) in made
        assert (MODE_ACCOUNT, OP_BIND, 1) in made and made[-1] == (MODE_TARGET, OP_BIND, 1)
        assert data["target_iqn"] == "iqn.2010-10.org.openstack:volume-a"
        assert list(tgtd.targets.values()) == [data["target_iqn"]]

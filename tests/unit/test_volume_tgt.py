"""The iSCSI target helper's pieces: what goes over tgtd's management socket (tgtadm's
wire format, answered here by a socket that decodes it as tgtd does), the per-volume
CHAP credentials, and the connector's initiator name."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from cumulo.volume.drivers.driver import InvalidConnector
from cumulo.volume.drivers.tgt import (
    MODE_ACCOUNT,
    MODE_TARGET,
    OP_NEW,
    OP_SHOW,
    IscsiExports,
    TgtAdmin,
    TgtError,
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


def test_the_request_is_tgtadms_header_and_nul_terminated_parameters(tmp_path: Path) -> None:
    assert REQUEST.size == 120  # what tgtd reads before the parameters
    tgtd = FakeTgtd(tmp_path / "socket.0", [(0, ""), (0, "Target 3: iqn.x:volume-a\n    x\n")])
    admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
    admin._exchange(
        MODE_ACCOUNT, OP_NEW, {"user": "u1", "password": "p1"}, -1, 2**64 - 1, False, ""
    )
    shown = admin._exchange(MODE_TARGET, OP_SHOW, {}, -1, 2**64 - 1, False, "")
    tgtd.thread.join(5)
    first, second = tgtd.requests
    assert first == {
        "mode": 7, "op": 0, "lld": "iscsi", "tid": -1, "lun": 2**64 - 1, "force": 0,
        "body": b"user=u1,password=p1\0",
    }  # fmt: skip
    assert (second["mode"], second["op"], second["body"]) == (1, 2, b"")
    assert shown.startswith("Target 3: iqn.x:volume-a")


def test_a_refusal_names_tgtds_error_and_a_comma_never_reaches_it(tmp_path: Path) -> None:
    FakeTgtd(tmp_path / "socket.0", [(9, "")])
    admin = TgtAdmin("127.0.0.1:3260", tmp_path / "socket.0")
    with pytest.raises(TgtError, match="target already exists") as refused:
        admin._exchange(MODE_TARGET, OP_NEW, {"targetname": "iqn.x"}, 1, 0, False, "create x")
    assert refused.value.code == 9
    with pytest.raises(Exception, match="comma"):
        admin._exchange(MODE_TARGET, OP_NEW, {"targetname": "a,b"}, 1, 0, False, "")


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

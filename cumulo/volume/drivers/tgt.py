"""iSCSI exports of volumes through the Linux SCSI target daemon (tgtd), as Cinder's LVM
driver exports them with its `tgtadm` target helper.

Each exported volume is one target, `<target_prefix>volume-<id>` (Cinder's
`iqn.2010-10.org.openstack:` by default), its data LUN 1 backed by the volume's file
(LUN 0 is tgt's controller), an incoming CHAP account of its own bound to it, and an
initiator-name ACL per connected host: only the initiators of its attachments may log
in, and only with the volume's CHAP credentials. The export is made by the first
connection, the initiator's ACL removed with its host's last attachment, and the whole
target (and account) removed with the volume's last attachment or the volume.

tgtd is spoken to over its management socket (the protocol of tgtadm, tgt's
usr/tgtadm.h) rather than by running tgtadm: tgtadm takes a CHAP password in its argv,
where anyone on the host reads it in `ps`. tgtd is started when it does not run.

The CHAP credentials of a volume are derived from a random key of the backend (0600 in
its `.iscsi` directory) and the volume id: stable across restarts without being stored,
different for every volume, never logged. Which attachment came from which initiator is
kept in a small record per exported volume in the same directory (no secret in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import struct
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cumulo.common.locks import keyed_lock
from cumulo.volume.drivers.driver import DriverError, InvalidConnector

LOG = logging.getLogger(__name__)

TGT_SOCKET = Path("/var/run/tgtd/socket.0")
DATA_LUN = 1  # LUN 0 is tgt's own controller (Cinder's tgt targets use LUN 1 too)
_START_TIMEOUT = 10.0
# tgtd runs each management request whole in its event loop, in milliseconds: one not
# answered in EXCHANGE_TIMEOUT is stuck (a caller's whole attach has 120 s), one that
# takes SLOW_EXCHANGE is logged.
EXCHANGE_TIMEOUT = 20.0
SLOW_EXCHANGE = 2.0
SESSIONS_TIMEOUT = 5.0
BUSY_WAIT = 10.0  # how long a LUN's removal is tried again while tgtd says it is busy

# usr/tgtadm.h: enum tgtadm_mode, enum tgtadm_op, struct tgtadm_req / tgtadm_rsp.
MODE_TARGET, MODE_DEVICE, MODE_ACCOUNT = 1, 2, 7
OP_NEW, OP_DELETE, OP_SHOW, OP_BIND, OP_UNBIND = 0, 1, 2, 3, 4
_REQUEST = struct.Struct("@ii64sIiQQIIIIII")
_RESPONSE = struct.Struct("@II")
_NO_LUN = (1 << 64) - 1
# usr/tgtadm_error.h: what an idempotent step may meet (already made / already gone).
_ERRORS = {
    4: "no such target",
    5: "no such logical unit",
    8: "no such binding",
    9: "target already exists",
    10: "logical unit already exists",
    11: "binding already exists",
    12: "ACL already exists",
    13: "ACL does not exist",
    14: "account already exists",
    15: "no such account",
    17: "invalid request",
    19: "target is active",
    20: "logical unit is busy",
}
_LUN_BUSY = 20
_TARGET_EXISTS = 9
_ALREADY = {9, 10, 11, 12, 14}
_GONE = {4, 5, 8, 13, 15}
# What libiscsi and tgt take in an IQN; a path or name with a comma would split tgt's
# key=value parameters.
_IQN = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[A-Za-z0-9.:_-]+)?|eui\.[0-9A-Fa-f]{16})$")


class TgtError(DriverError):
    def __init__(self, code: int, what: str) -> None:
        self.code = code
        super().__init__(f"tgtd refused to {what}: {_ERRORS.get(code, f'error {code}')}")


class TgtTimeout(DriverError):
    """tgtd took the request and did not answer it in time."""


class TgtAdmin:
    """tgtd's management channel (what tgtadm sends), and tgtd started when it is not
    running (its portal: `portal`, host:port).

    Each request is its own connection to the socket, spoken with asyncio streams: no
    thread of the process's shared pool is taken (image and volume copies queue there),
    and requests for different targets run side by side (tgtd runs each one whole in
    its event loop, in the order they arrive). tgtd answers in milliseconds; one that
    takes `slow` seconds is logged with the I_T nexus (session) count tgtd reports, and
    one unanswered after `timeout` seconds fails the step (logged the same way) instead
    of holding the volume's attach or detach until the caller's own timeout."""

    def __init__(
        self,
        portal: str,
        socket_path: Path = TGT_SOCKET,
        *,
        timeout: float = EXCHANGE_TIMEOUT,
        slow: float = SLOW_EXCHANGE,
    ) -> None:
        self.portal = portal
        self.socket_path = socket_path
        self.timeout = timeout
        self.slow = slow
        self._started = False
        self._starting = asyncio.Lock()

    async def request(
        self,
        mode: int,
        op: int,
        params: dict[str, str] | None = None,
        *,
        tid: int = -1,
        lun: int = _NO_LUN,
        force: bool = False,
        what: str = "",
    ) -> str:
        message = encode_request(mode, op, params or {}, tid, lun, force)
        what = what or f"do operation {op} in mode {mode}"
        await self.ensure_running()
        try:
            code, text = await self._timed_exchange(message, what)
        except OSError:  # (a timeout is TgtTimeout: tgtd took the request)
            self._started = False  # tgtd went away: started again, asked once more
            await self.ensure_running()
            try:
                code, text = await self._timed_exchange(message, what)
            except OSError as exc:
                raise DriverError(f"tgtd does not answer on {self.socket_path}: {exc}") from None
        if code != 0:
            raise TgtError(code, what)
        return text

    async def _timed_exchange(self, message: bytes, what: str) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._exchange(message)
        except TimeoutError:
            took = loop.time() - started
            LOG.error(
                "tgtd did not answer the request to %s in %.1f s (%s)",
                what, took, await self._sessions(),
            )  # fmt: skip
            raise TgtTimeout(f"tgtd did not answer the request to {what} in {took:.0f} s") from None
        took = loop.time() - started
        if took >= self.slow:
            LOG.warning("tgtd took %.1f s to %s (%s)", took, what, await self._sessions())
        return answer

    async def _exchange(self, message: bytes) -> tuple[int, str]:
        """One request and tgtd's answer: (error code, text)."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            writer.write(message)
            await writer.drain()
            code, length = _RESPONSE.unpack(await _read_exactly(reader, _RESPONSE.size))
            data = b""
            if code == 0 and length > _RESPONSE.size:
                data = await _read_exactly(reader, length - _RESPONSE.size)
        finally:
            writer.close()
        return code, data.rstrip(b"\0").decode(errors="replace")

    async def _sessions(self) -> str:
        """How many I_T nexuses (initiator sessions) tgtd holds, for a log line."""
        message = encode_request(MODE_TARGET, OP_SHOW, {}, -1, _NO_LUN, False)
        try:
            async with asyncio.timeout(min(SESSIONS_TIMEOUT, self.timeout)):
                code, shown = await self._exchange(message)
        except (OSError, DriverError):  # TimeoutError is an OSError
            return "its session count unknown: it did not answer `show target` either"
        if code:
            return f"its session count unknown: `show target` failed with error {code}"
        return f"{count_sessions(shown)} sessions open on {len(parse_targets(shown))} targets"

    async def answers(self) -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            return False
        writer.close()
        return True

    async def ensure_running(self) -> None:
        if self._started:
            return
        async with self._starting:  # one start, whoever asks meanwhile
            if self._started or await self.answers():
                self._started = True
                return
            await self._start()
            self._started = True

    async def _start(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                "tgtd", "--iscsi", f"portal={self.portal}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # it outlives this process: guests keep their disks
            )  # fmt: skip
        except FileNotFoundError:
            raise DriverError(
                "tgtd is not installed (the Debian package tgt: `cumulo host-packages "
                "--install`): iSCSI exports cannot be made"
            ) from None
        _, err = await proc.communicate()  # tgtd forks into the background and returns
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        while not await self.answers():
            if loop.time() > deadline:
                raise DriverError(f"tgtd did not start: {err.decode(errors='replace').strip()}")
            await asyncio.sleep(0.1)
        LOG.info("started tgtd (iSCSI portal %s)", self.portal)

    async def targets(self) -> dict[str, int]:
        """The targets tgtd has: tid by IQN (from `show target`'s "Target N: <iqn>")."""
        return parse_targets(await self.request(MODE_TARGET, OP_SHOW, what="list targets"))


def encode_request(
    mode: int, op: int, params: dict[str, str], tid: int, lun: int, force: bool
) -> bytes:
    """tgtadm's request: the header, then the parameters as key=value,... NUL-ended."""
    for key, value in params.items():
        if "," in value or "\0" in value:
            raise DriverError(f"tgt parameter {key} cannot hold a comma: {value!r}")
    body = ",".join(f"{k}={v}" for k, v in params.items()).encode()
    body = body + b"\0" if body else b""
    header = _REQUEST.pack(
        mode, op, b"iscsi", _REQUEST.size + len(body), tid, 0, lun, 0, 0, 0, 0, 0, int(force)
    )
    return header + body


def parse_targets(shown: str) -> dict[str, int]:
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^Target (\d+): (\S+)$", shown, re.M)}


def count_sessions(shown: str) -> int:
    """The I_T nexuses in `show target`'s text ("I_T nexus: N" under each target)."""
    return len(re.findall(r"^\s+I_T nexus: \d+$", shown, re.MULTILINE))


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise DriverError("tgtd closed its management connection") from None


def chap_credentials(key: bytes, volume_id: str) -> tuple[str, str]:
    """A volume's CHAP user name and password (20 letters and digits each, as Cinder's
    generated ones), derived from the backend's key."""

    def derive(purpose: str) -> str:
        digest = hmac.new(key, f"{purpose}:{volume_id}".encode(), hashlib.sha256).digest()
        alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        number = int.from_bytes(digest, "big")
        chars = []
        for _ in range(20):
            number, index = divmod(number, len(alphabet))
            chars.append(alphabet[index])
        return "".join(chars)

    return derive("user"), derive("password")


def check_initiator(connector: dict[str, Any]) -> str:
    """The connector's iSCSI initiator name (os-brick's `initiator`); InvalidConnector
    when it has none or it is not an IQN/EUI name."""
    initiator = connector.get("initiator")
    if not isinstance(initiator, str) or not initiator:
        raise InvalidConnector("initiator")
    if not _IQN.match(initiator) or len(initiator) > 223:
        raise InvalidConnector(f"initiator (not an iSCSI name: {initiator[:64]!r})")
    return initiator


def migration_initiator(host: str) -> str:
    """The initiator name a storage host's volume migrations write into another
    backend's iSCSI volume with (qemu-img's libiscsi)."""
    return "iqn.2010-10.org.openstack:migration-" + (
        re.sub(r"[^a-z0-9.-]+", "-", host.lower()) or "host"
    )


def image_opts(data: dict[str, Any], initiator: str, secret_id: str) -> str:
    """qemu-img's --image-opts of the raw bytes of an iSCSI connection's LUN, logged in
    as `initiator` with the CHAP password in the secret object `secret_id`."""
    opts = {
        "driver": "raw",
        "file.driver": "iscsi",
        "file.transport": "tcp",
        "file.portal": str(data["target_portal"]),
        "file.target": str(data["target_iqn"]),
        "file.lun": str(data["target_lun"]),
        "file.initiator-name": initiator,
    }
    if data.get("auth_method"):
        opts |= {"file.user": str(data["auth_username"]), "file.password-secret": secret_id}
    if any("," in value for value in opts.values()):
        raise DriverError("an iSCSI connection's names cannot hold a comma")
    return ",".join(f"{k}={v}" for k, v in opts.items())


class IscsiExports:
    """The iSCSI targets of one backend's volumes (records and key under `run_dir`)."""

    def __init__(
        self,
        run_dir: Path,
        address: str,
        port: int = 3260,
        target_prefix: str = "iqn.2010-10.org.openstack:",
        admin: TgtAdmin | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.portal = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.target_prefix = target_prefix
        self.admin = admin or TgtAdmin(self.portal)
        # One volume's export changes at a time; other volumes' go on meanwhile (tgtd
        # keeps each target apart, and a new target takes a free tid by retrying).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _volume_lock(self, volume_id: str) -> asyncio.Lock:
        return keyed_lock(self._locks, volume_id)

    def iqn(self, volume_id: str) -> str:
        return f"{self.target_prefix}volume-{volume_id}"

    def _record_path(self, volume_id: str) -> Path:
        return self.run_dir / f"volume-{volume_id}.json"

    def _load(self, volume_id: str) -> dict[str, str]:
        try:
            return json.loads(self._record_path(volume_id).read_text())["attachments"]
        except FileNotFoundError:
            return {}

    def _save(self, volume_id: str, attachments: dict[str, str], path: Path | None = None) -> None:
        """The record of the volume's export: its file and which attachment came from
        which initiator (none: no record)."""
        record = self._record_path(volume_id)
        if not attachments:
            record.unlink(missing_ok=True)
            return
        if path is None:
            path = Path(json.loads(record.read_text())["path"])
        tmp = record.with_suffix(".part")
        tmp.write_text(json.dumps({"path": str(path), "attachments": attachments}))
        tmp.replace(record)

    def _key(self) -> bytes:
        """The backend's CHAP key, made once (0600 from its first byte)."""
        path = self.run_dir / "chap.key"
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path.read_bytes()

    def exporting(self, volume_id: str) -> bool:
        return self._record_path(volume_id).exists()

    async def connect(
        self, volume_id: str, path: Path, attachment_id: str, initiator: str
    ) -> dict[str, Any]:
        """The volume exported (made if it is not) with `initiator` allowed in; Cinder's
        iSCSI connection properties."""
        user, password = chap_credentials(self._key(), volume_id)
        iqn = self.iqn(volume_id)
        async with self._volume_lock(volume_id):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tid = (await self.admin.targets()).get(iqn)
            if tid is not None and not self.exporting(volume_id):
                # A target with no record is what a failed export left: tgtd may apply a
                # create after the exporter gave up on it (a timeout), leaving a target
                # without its LUN or CHAP account. No attachment uses it: made again whole.
                LOG.warning("volume %s: %s left by a failed export, made again", volume_id, iqn)
                await self._drop_target(tid, user)
                tid = None
            if tid is None:
                tid = await self._make_target(iqn, path, user, password)
            await self._idempotent(
                MODE_TARGET, OP_BIND, {"initiator-name": initiator}, tid=tid,
                what=f"allow {initiator} into {iqn}",
            )  # fmt: skip
            attachments = self._load(volume_id)
            attachments[attachment_id] = initiator
            self._save(volume_id, attachments, path)
        LOG.info("volume %s exported as %s to %s", volume_id, iqn, initiator)
        return {
            "target_discovered": False,
            "target_portal": self.portal,
            "target_iqn": iqn,
            "target_lun": DATA_LUN,
            "auth_method": "CHAP",
            "auth_username": user,
            "auth_password": password,
            "discard": False,
        }

    async def _make_target(self, iqn: str, path: Path, user: str, password: str) -> int:
        """A new target with the file as its data LUN and the volume's CHAP account
        bound; nothing left of it when a step fails."""
        for attempt in range(20):
            # Another backend (or cumulo process) on this tgtd may take the same tid.
            tid = max((await self.admin.targets()).values(), default=0) + 1
            try:
                await self.admin.request(
                    MODE_TARGET, OP_NEW, {"targetname": iqn}, tid=tid, what=f"create {iqn}"
                )
                break
            except TgtError as exc:
                if exc.code != _TARGET_EXISTS or attempt == 19:
                    raise
                if iqn in await self.admin.targets():
                    raise  # the volume's own target, made meanwhile

        try:
            await self.admin.request(
                MODE_DEVICE, OP_NEW, {"path": str(path), "bstype": "rdwr"}, tid=tid,
                lun=DATA_LUN, what=f"add {path.name} to {iqn}",
            )  # fmt: skip
            await self._idempotent(
                MODE_ACCOUNT, OP_NEW, {"user": user, "password": password},
                what=f"create the CHAP account of {iqn}",
            )  # fmt: skip
            await self.admin.request(
                MODE_ACCOUNT, OP_BIND, {"user": user}, tid=tid,
                what=f"bind the CHAP account of {iqn}",
            )  # fmt: skip
        except BaseException:
            await self._drop_target(tid, user)
            raise
        return tid

    async def _idempotent(
        self,
        mode: int,
        op: int,
        params: dict[str, str],
        *,
        tid: int = -1,
        force: bool = False,
        what: str = "",
    ) -> None:
        """A step whose work may already be done (made) or undone (removed)."""
        try:
            await self.admin.request(mode, op, params, tid=tid, force=force, what=what)
        except TgtError as exc:
            if exc.code not in (_ALREADY if op in (OP_NEW, OP_BIND) else _GONE):
                raise

    async def _drop_target(self, tid: int, user: str) -> None:
        # force: a host still logged in is cut off (the volume is going away from it).
        delete = functools.partial(
            self._idempotent, MODE_TARGET, OP_DELETE, {}, tid=tid, force=True,
            what="delete a target",
        )  # fmt: skip
        await self._while_busy(delete)
        await self._idempotent(MODE_ACCOUNT, OP_DELETE, {"user": user}, what="delete an account")

    @staticmethod
    async def _while_busy(step: Callable[[], Awaitable[object]]) -> None:
        """`step` again while tgtd answers that its LUN is busy (commands of a logged-in
        host in flight: tgtd takes a LUN out of a target only between them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT
        while True:
            try:
                await step()
                return
            except TgtError as exc:
                if exc.code != _LUN_BUSY or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def regrow(self, volume_id: str, path: Path, grow: Callable[[], Awaitable[None]]) -> None:
        """Grow an exported volume: `await grow()` while its LUN is out of the target,
        then the LUN again at its new size (Cinder's extend_target, `tgt-admin --update
        --force`: tgtd reads a LUN's size when it is added). Logged-in hosts keep their
        session and meet a unit attention; persistent reservations on the LUN are lost."""
        async with self._volume_lock(volume_id):
            tid = (await self.admin.targets()).get(self.iqn(volume_id))
            if tid is None:
                await grow()
                return
            take_out = functools.partial(
                self.admin.request, MODE_DEVICE, OP_DELETE, tid=tid, lun=DATA_LUN,
                what=f"take {path.name} out of its target",
            )  # fmt: skip
            await self._while_busy(take_out)
            try:
                await grow()
            finally:
                await self.admin.request(
                    MODE_DEVICE, OP_NEW, {"path": str(path), "bstype": "rdwr"}, tid=tid,
                    lun=DATA_LUN, what=f"add {path.name} to {self.iqn(volume_id)} again",
                )  # fmt: skip

    async def restore(self) -> None:
        """The exports the records name made again where tgtd lacks them (Cinder's
        ensure_export at the volume service's start): a tgtd that restarted (a host
        reboot) has lost its targets, which the attached hosts log in to again."""
        records = sorted(self.run_dir.glob("volume-*.json"))
        if not records:
            return
        for record in records:
            volume_id = record.stem.removeprefix("volume-")
            async with self._volume_lock(volume_id):
                await self._restore(volume_id)

    async def _restore(self, volume_id: str) -> None:
        iqn = self.iqn(volume_id)
        try:
            found = json.loads(self._record_path(volume_id).read_text())
        except FileNotFoundError:
            return  # its last attachment went meanwhile
        path = Path(found.get("path", ""))
        if not found.get("attachments") or iqn in await self.admin.targets():
            return
        if not path.is_file():
            LOG.warning("volume %s: no data at %s to export again", volume_id, path)
            return
        tid = await self._make_target(iqn, path, *chap_credentials(self._key(), volume_id))
        for initiator in sorted(set(found["attachments"].values())):
            await self._idempotent(
                MODE_TARGET, OP_BIND, {"initiator-name": initiator}, tid=tid,
                what=f"allow {initiator} into {iqn}",
            )  # fmt: skip
        LOG.info("volume %s: iSCSI export %s made again", volume_id, iqn)

    async def disconnect(self, volume_id: str, attachment_id: str) -> None:
        """The attachment's initiator let out once none of the volume's other attachments
        is its; the whole export removed with the last attachment."""
        async with self._volume_lock(volume_id):
            attachments = self._load(volume_id)
            initiator = attachments.pop(attachment_id, None)
            if initiator is None:
                return
            if not attachments:
                await self._remove(volume_id)
                return
            if initiator not in attachments.values():
                tid = (await self.admin.targets()).get(self.iqn(volume_id))
                if tid is not None:
                    await self._idempotent(
                        MODE_TARGET, OP_UNBIND, {"initiator-name": initiator}, tid=tid,
                        what=f"remove {initiator} from {self.iqn(volume_id)}",
                    )  # fmt: skip
            self._save(volume_id, attachments)

    async def remove(self, volume_id: str) -> None:
        """The volume's export gone, whoever is connected (the volume is deleted)."""
        async with self._volume_lock(volume_id):
            await self._remove(volume_id)

    async def _remove(self, volume_id: str) -> None:
        if not self.exporting(volume_id) and not await self.admin.answers():
            return  # never exported, and no tgtd to ask
        tid = (await self.admin.targets()).get(self.iqn(volume_id))
        user, _ = chap_credentials(self._key(), volume_id)
        if tid is not None:
            await self._drop_target(tid, user)
            LOG.info("volume %s: iSCSI export %s removed", volume_id, self.iqn(volume_id))
        self._save(volume_id, {})

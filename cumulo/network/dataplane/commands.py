"""Running iproute2, nftables and sysctl: argv lists on asyncio subprocesses, never a shell.

Every command the linuxbridge driver runs goes through `run`, so a failure names the
command and its stderr, and nothing built from user input is ever parsed by a shell.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any


class CommandError(RuntimeError):
    def __init__(self, argv: tuple[str, ...], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


# Commands are started from these threads, not the event loop's: the thread that
# starts a process waits (vfork) until the child has exec'd, tens of milliseconds on a
# loaded host, and the event loop serves every API of an all-in-one cloud.
_STARTER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cumulo-commands")


async def _started(argv: tuple[str, ...], **how: Any) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run(argv, **how) in one of the starter threads."""
    return await asyncio.get_running_loop().run_in_executor(
        _STARTER, partial(subprocess.run, argv, **how)
    )


async def run(
    *argv: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> str:
    """Run argv off the event loop; its stdout, or CommandError when it fails and check."""
    given: dict[str, Any] = (
        {"input": stdin.encode()} if stdin is not None else {"stdin": subprocess.DEVNULL}
    )
    proc = await _started(argv, capture_output=True, env=env, **given)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace")


async def run_daemon(*argv: str) -> None:
    """Start a program that daemonizes; its output goes to a file, never a pipe (the
    daemon child would hold a pipe open, and a reader would wait for it)."""
    with tempfile.TemporaryFile() as out:
        proc = await _started(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if proc.returncode != 0:
            out.seek(0)
            raise CommandError(argv, proc.returncode, out.read().decode(errors="replace"))


def netns_exec(ns: str, *argv: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns, *argv)


def _in(ns: str | None) -> tuple[str, ...]:
    """`ip`'s namespace option; None: the host's own namespace."""
    return ("-n", ns) if ns else ()


async def ip(ns: str | None, *args: str, check: bool = True) -> str:
    """`ip -n <ns> ...`"""
    return await run("ip", *_in(ns), *args, check=check)


async def bridge(ns: str | None, *args: str, check: bool = True) -> str:
    """`bridge -n <ns> ...` (iproute2's forwarding database tool)."""
    return await run("bridge", *_in(ns), *args, check=check)


async def links(ns: str | None) -> dict[str, dict[str, Any]]:
    """The namespace's links by name (ip -json link)."""
    out = await run("ip", *_in(ns), "-json", "link", "show")
    return {link["ifname"]: link for link in json.loads(out or "[]")}


async def addresses(ns: str | None, dev: str) -> set[str]:
    """`ip/prefixlen` of every global address on dev."""
    out = await run("ip", *_in(ns), "-json", "addr", "show", "dev", dev)
    found = set()
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") != "link":
                found.add(f"{a['local']}/{a['prefixlen']}")
    return found


async def addresses_by_device(ns: str | None) -> dict[str, set[str]]:
    """`ip/prefixlen` of every global address in the namespace, by device."""
    out = await run("ip", *_in(ns), "-json", "addr", "show")
    found: dict[str, set[str]] = {}
    for link in json.loads(out or "[]"):
        found[link["ifname"]] = {
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("scope") != "link"
        }
    return found


async def namespaces() -> set[str]:
    out = await run("ip", "-json", "netns", "list")
    return {n["name"] for n in json.loads(out or "[]")}


async def add_namespace(ns: str) -> None:
    if ns not in await namespaces():
        await run("ip", "netns", "add", ns)
    await ip(ns, "link", "set", "lo", "up")


async def delete_namespace(ns: str) -> None:
    """Stop every process still in the namespace, delete its links, then remove it.

    `ip netns delete` removes only the name: the namespace lives on while anything still
    holds it (a socket made in it, a process being reaped), and so do its veths and their
    peers in other namespaces. Deleting the links first takes the peers down now."""
    await kill_namespace_processes(ns)
    out = await run("ip", "-n", ns, "-json", "link", "show", check=False)
    try:
        names = [link["ifname"] for link in json.loads(out or "[]")]
    except ValueError:
        names = []
    for name in names:
        if name != "lo":
            await run("ip", "-n", ns, "link", "del", name, check=False)
    await run("ip", "netns", "delete", ns, check=False)


async def terminate(pid: int | None, wait: float = 5.0) -> None:
    """SIGTERM the process, and wait (up to `wait` seconds) until it is gone."""
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(int(wait * 100)):
        if not Path(f"/proc/{pid}").exists():
            return
        await asyncio.sleep(0.01)


async def kill_namespace_processes(ns: str) -> None:
    out = await run("ip", "netns", "pids", ns, check=False)
    for pid in (int(p) for p in out.split() if p.isdecimal()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def sysctl(ns: str, *settings: str) -> None:
    """Set `key=value` sysctls inside the namespace (missing keys are skipped)."""
    for setting in settings:
        await run(*netns_exec(ns, "sysctl", "-q", "-w", setting), check=False)


async def nft_load(ns: str, ruleset: str) -> None:
    """Replace the namespace's whole ruleset atomically (one nft transaction)."""
    await run(*netns_exec(ns, "nft", "-f", "-"), stdin="flush ruleset\n" + ruleset)

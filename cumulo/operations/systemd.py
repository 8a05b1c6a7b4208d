"""systemd units for `cumulo up` and the processes of a scale-out host.

`KillMode=process`: stopping or restarting a unit stops cumulo only. Its QEMU guests,
NBD exports and the dnsmasq of its networks live in the same control group and must
keep running (as Nova's and Neutron's agents leave guests alone); `cumulo purge`
removes them when asked.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

UNITS = {
    "cumulo.service": ("up", "cumulo all-in-one cloud (every API, conductor, scheduler, host)"),
    "cumulo-api.service": ("api", "cumulo REST APIs (scale-out controller)"),
    "cumulo-conductor.service": ("conductor", "cumulo compute conductor (scale-out controller)"),
    "cumulo-scheduler.service": ("scheduler", "cumulo compute scheduler (scale-out controller)"),
    "cumulo-compute.service": ("compute", "cumulo compute host (guests of this machine)"),
    "cumulo-network-agent.service": (
        "network-agent",
        "cumulo network agent (L2, DHCP, L3, metadata of this machine)",
    ),
    "cumulo-volume.service": ("volume", "cumulo storage host (volume backends of this machine)"),
}

TEMPLATE = """\
[Unit]
Description={description}
Documentation=file://{docs}
After=network-online.target postgresql.service mariadb.service rabbitmq-server.service
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Environment=CUMULO_STATE_DIR={state_dir}
KillMode=process
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def render_units(state_dir: Path, cumulo: Path | None = None) -> dict[str, str]:
    """Unit file name -> text, running the `cumulo` next to this Python (the venv's),
    logging every request to rotated per-service files in `<state dir>/logs`."""
    binary = cumulo or Path(sys.executable).parent / "cumulo"
    docs = Path(__file__).resolve().parents[2] / "README.md"
    return {
        name: TEMPLATE.format(
            description=description,
            docs=docs,
            exec_start=shlex.join(
                [str(binary), "-v", "--log-dir", str(state_dir / "logs"), command]
                + ["--state-dir", str(state_dir)]
            ),
            state_dir=state_dir,
        )
        for name, (command, description) in UNITS.items()
    }


def install_units(unit_dir: Path, state_dir: Path) -> list[Path]:
    unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_units(state_dir).items():
        path = unit_dir / name
        path.write_text(text)
        written.append(path)
    return written

"""Enrolling a new host with a one-time token (`cumulo host token create` on a controller,
`cumulo compute|network-agent|volume --join URL --token T` on the new host).

The controller keeps only each token's SHA-256, its expiry and its remaining uses in
`<state dir>/enrolment-tokens.json` (mode 600, updated under a lock). Redeeming a valid
token over the Identity port (`POST /cumulo/enrol`) answers the controller's config as a
new host needs it (the shared bus, database and service credentials; this host's own
settings cleared) and the CA it verifies the APIs against when TLS is on: the token is
the secret that stands for all of them, so it is short-lived and single-use by default.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w

from cumulo.common.config import CONFIG_FILE, CumuloConfig, load_config
from cumulo.common.tls import ca_file

TOKENS_FILE = "enrolment-tokens.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@contextlib.contextmanager
def _tokens(state_dir: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """The token records, locked for the block and written back after it."""
    path = state_dir / TOKENS_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            text = f.read()
            records = json.loads(text) if text.strip() else {}
            now = time.time()
            records = {k: v for k, v in records.items() if v["expires"] > now and v["uses"] > 0}
            yield records
            f.seek(0)
            f.truncate()
            f.write(json.dumps(records))
    finally:
        os.close(fd)


def create_token(state_dir: Path, ttl: float = 3600.0, uses: int = 1) -> str:
    """A new enrolment token, valid `ttl` seconds for `uses` hosts."""
    token = secrets.token_urlsafe(32)
    with _tokens(state_dir) as records:
        records[_digest(token)] = {"expires": time.time() + ttl, "uses": uses}
    return token


def redeem(state_dir: Path, token: str) -> bool:
    """Use the token once; False when it is unknown, expired or used up."""
    with _tokens(state_dir) as records:
        record = records.get(_digest(token))
        if record is None:
            return False
        record["uses"] -= 1
        if record["uses"] <= 0:
            del records[_digest(token)]
        return True


def host_config(config: CumuloConfig, state_dir: Path) -> dict[str, Any]:
    """What a new host is given: the controller's config without the controller's own
    host settings, and the CA's certificate when the APIs are served over TLS."""
    given = config.model_copy(deep=True)
    given.compute.host = ""
    given.volume.host = ""
    given.network.agent_host = ""
    given.network.tunnel_local_ip = given.network.tunnel_device = ""
    given.network.ovs_tunnel_local_ip = given.network.ovs_tunnel_device = ""
    given.network.ovs_tunnel_peers = []
    ca = ca_file(config)
    given.tls.cert_file = given.tls.key_file = given.tls.ca_file = ""
    ca_pem = None
    if ca:
        path = Path(ca) if Path(ca).is_absolute() else state_dir / ca
        ca_pem = path.read_text()
    return {"config": tomli_w.dumps(given.model_dump()), "ca": ca_pem}


def join(state_dir: Path, url: str, token: str) -> CumuloConfig:
    """On the new host: redeem the token at the controller's Identity URL and write the
    config (and CA) it answers into this host's state dir."""
    import tomllib
    from urllib.parse import urlsplit

    import httpx

    base = url.rstrip("/").removesuffix("/v3")
    # The first contact trusts the address given (as `kubeadm join` without a CA hash):
    # the answer carries the CA every later call is verified against.
    response = httpx.post(f"{base}/cumulo/enrol", json={"token": token}, verify=False, timeout=30)
    if response.status_code != 200:
        raise ValueError(f"the controller refused the enrolment ({response.status_code}): "
                         f"{response.text[:200]}")  # fmt: skip
    body = response.json()
    config = CumuloConfig.model_validate(tomllib.loads(body["config"]))
    if not config.public_host:  # the controller names no public address: the one used
        config.public_host = urlsplit(base).hostname or ""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    if body.get("ca"):
        (state_dir / "controller-ca.pem").write_text(body["ca"])
        config.tls.ca_file = str(state_dir / "controller-ca.pem")
    path = state_dir / CONFIG_FILE
    path.write_text(tomli_w.dumps(config.model_dump()))
    path.chmod(0o600)
    return load_config(state_dir)

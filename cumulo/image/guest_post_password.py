#!/usr/bin/python3
"""Runs in the guest, never in cumulo: `cumulo image build debian` installs it as a
cloud-init per-instance script (`/var/lib/cloud/scripts/per-instance/`).

When the server's metadata asks for it (`openstack server create --property
post_password=true`), it gives the image's default user a random password and posts it
to the metadata service encrypted with the server's key pair, as Windows images'
cloudbase-init do on Nova: RSA PKCS#1 v1.5 with the key pair's public key, base64.
`openstack server get password` (Nova's `os-server-password`) returns that text, which
only the key pair's private key decrypts (`nova get-password <server> <key>`, or
`base64 -d | openssl pkeyutl -decrypt -inkey <key>`). Password logins over SSH also
need `ssh_pwauth: true` in the user data.

Only the standard library and what a Debian cloud image has (`chpasswd`, `ssh-keygen`,
`openssl`, `cloud-init`).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

METADATA = "http://169.254.169.254/openstack/latest"
ASKED_BY = "post_password"  # the server metadata key that asks for it
DEFAULT_USER = "debian"


def log(message: str) -> None:
    print(f"cumulo-post-password: {message}", file=sys.stderr)


def default_user() -> str:
    """The image's default user as cloud-init has it (`system_info.default_user`)."""
    query = subprocess.run(["cloud-init", "query", "merged_cfg"], capture_output=True, text=True)
    try:
        return json.loads(query.stdout)["system_info"]["default_user"]["name"]
    except (ValueError, KeyError, TypeError):
        return DEFAULT_USER


def encrypt(public_key: str, text: str) -> str:
    """`text` encrypted with an OpenSSH RSA public key, PKCS#1 v1.5 padding, base64."""
    with tempfile.TemporaryDirectory() as work:
        openssh, pem = Path(work, "key.pub"), Path(work, "key.pem")
        openssh.write_text(public_key.strip() + "\n")
        pkcs8 = subprocess.run(["ssh-keygen", "-e", "-m", "PKCS8", "-f", str(openssh)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        pem.write_text(pkcs8.stdout)
        sealed = subprocess.run(
            ["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(pem),
             "-pkeyopt", "rsa_padding_mode:pkcs1"],
            input=text.encode(), capture_output=True, check=True,
        )  # fmt: skip
    return base64.b64encode(sealed.stdout).decode()


def main() -> int:
    try:
        with urllib.request.urlopen(f"{METADATA}/meta_data.json", timeout=30) as answer:
            meta = json.load(answer)
    except OSError as exc:
        log(f"no metadata service ({exc}): nothing posted")
        return 0
    if str(meta.get("meta", {}).get(ASKED_BY, "")).lower() not in ("true", "yes", "1"):
        return 0
    keys = list((meta.get("public_keys") or {}).values())
    if not keys or not keys[0].startswith("ssh-rsa "):
        log("the server has no RSA key pair to encrypt the password with: nothing posted")
        return 1
    with urllib.request.urlopen(f"{METADATA}/password", timeout=30) as answer:
        if answer.read().strip():
            return 0  # posted already (this instance's disk was rebuilt or restored)
    password = secrets.token_urlsafe(12)
    user = default_user()
    posting = urllib.request.Request(
        f"{METADATA}/password", data=encrypt(keys[0], password).encode(), method="POST"
    )
    try:
        urllib.request.urlopen(posting, timeout=30).close()
    except OSError as exc:
        log(f"the metadata service did not take the password: {exc}")
        return 1
    # Set only once posted: the password the user can read is the one that works.
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    log(f"a new password for {user} is posted, encrypted with the key pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The guest's password poster (cumulo/image/guest_post_password.py, run by cloud-init in
the Debian image): what it posts is what the key pair's private key decrypts, as Nova's
`os-server-password` users decrypt it."""

from __future__ import annotations

import base64
import shutil

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cumulo.image import guest_post_password
from tests.conftest import skip_or_fail


def test_the_posted_text_is_the_password_under_the_key_pairs_public_key():
    if shutil.which("ssh-keygen") is None or shutil.which("openssl") is None:
        skip_or_fail("ssh-keygen and openssl are missing (cumulo host-packages)")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    openssh = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    posted = guest_post_password.encrypt(openssh.decode() + " Generated-by-Nova", "s3cret-Pw")
    # A 2048-bit key's ciphertext: 344 base64 characters, under the 1,020 Nova keeps.
    assert len(posted) == 344
    sealed = base64.b64decode(posted)
    assert private.decrypt(sealed, padding.PKCS1v15()) == b"s3cret-Pw"
